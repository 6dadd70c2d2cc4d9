"""`compare bench`: parsing and printing; the timing is in runner/bench/measure.py."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from compare import atomic
from compare.cli.app import app, console, fail, fit_columns, frame_table, table_width

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MODES = "separate,shared,cached,fused,bf16,loop"
LEFT = ("mode", "what it is")
COLUMNS = ["mode", "what it is", "s/step (min-max)", "samples·models/s", "× separate", "× loop", "GFLOP/s", "MFU"]
KEEP = {"mode", "× separate", "× loop"}  # never dropped, never shrunk
DROP_FIRST = ["what it is", "MFU", "GFLOP/s", "samples·models/s"]  # at a narrow terminal, in this order
WHAT_WIDTH = 24  # the narrowest "what it is" worth wrapping into


def _ratio(value: float, low: float, high: float) -> str:
    """The median ratio, and its 95% interval where the repeats give one."""
    if math.isnan(value):
        return "–"
    return f"{value:.2f}" if math.isnan(low) or low == high else f"{value:.2f} ({low:.2f}-{high:.2f})"


def _gflops(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The bench table as the text cells printed (terminal and Markdown)."""
    rows = []
    for r in table.itertuples(index=False):
        rows.append([
            r.mode,
            r.what,
            f"{r.seconds_per_step:.4f} ({r.seconds_per_step_min:.4f}-{r.seconds_per_step_max:.4f})",
            f"{r.samples_models_per_s:,.0f}",
            _ratio(r.vs_separate, r.vs_separate_low, r.vs_separate_high),
            _ratio(r.vs_loop, r.vs_loop_low, r.vs_loop_high),
            _gflops(r.gflops_per_s),
            f"{100 * r.mfu:.1f}%",
        ])
    import pandas as pd  # noqa: PLC0415 - `compare --help` stays free of heavy imports

    return pd.DataFrame(rows, columns=COLUMNS)


def notes(result) -> list[str]:
    """What the numbers mean and how they were obtained, printed under the table."""
    from compare.bench.measure import INTERVAL_REPEATS  # noqa: PLC0415 - as in bench_cmd

    cfg = result.config
    models = ", ".join(m.name for m in cfg.models)
    repeats = f"{result.repeats} repeat{'s' if result.repeats != 1 else ''}"
    load = f" (load average {' -> '.join(f'{v:.1f}' for v in result.load)} on {os.cpu_count()} cores)" if result.load else ""
    lines = [
        f"{len(cfg.models)} models ({models}); batch {cfg.data.batch_size}; {result.steps} timed steps after {result.warmup} warmup steps; "
        f"{repeats}, modes interleaved; medians over repeats; device {result.device}{load}.",
        "samples·models/s: samples each model trained, summed over the models, per second of wall time (data loading included).",
        "× separate, × loop: throughput ratio to that mode in the same repeat, median over repeats (> 1: faster)"
        + (f"; in brackets its 95% bootstrap interval over the {repeats}." if result.repeats >= INTERVAL_REPEATS else f"; with {INTERVAL_REPEATS} or more repeats, its 95% interval too."),
        "GFLOP/s: 3 × forward FLOPs per sample (torch.utils.flop_counter; backward ≈ 2 × forward) × samples·models / second.",
    ]
    peaks = {p.source: sorted(m for m in result.modes if result.peaks[m] is p) for p in result.peaks.values()}
    for source, modes in peaks.items():
        lines.append(f"MFU peak for {', '.join(modes)}: {source}.")
    return lines


def markdown(result) -> str:
    """The table and its notes as Markdown (the README's performance table)."""
    from compare.report.formats import markdown_table  # noqa: PLC0415 - `compare --help` stays free of pandas

    return markdown_table(display(result.table()), left=LEFT) + "\n\n" + "\n".join(f"- {line}" for line in notes(result)) + "\n"


def bench_table(result, width: int):
    """(the rich table at `width` columns, the columns left out). "What it is" wraps while it
    has WHAT_WIDTH columns; with less the columns go in DROP_FIRST's order (the notes and
    `--out FILE.md` keep every one)."""
    frame, dropped = display(result.table()), []
    if table_width(frame.drop(columns="what it is")) + 3 + WHAT_WIDTH > width:
        frame, dropped = fit_columns(frame, width, DROP_FIRST, KEEP)
    return frame_table(frame, "compare bench: the same training work in each mode", left=set(LEFT), wrap={"what it is"}, whole=KEEP), dropped


def print_bench(result) -> None:
    table, dropped = bench_table(result, console.width)
    console.print(table)
    if dropped:
        console.print(f"left out at {console.width} columns: {', '.join(dropped)} (--out FILE.md shows every column)", markup=False, highlight=False)
    for line in notes(result):
        console.print(line, markup=False, highlight=False)


@app.command("bench")
def bench_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file: its data and models are the work timed.")],
    steps: Annotated[int, typer.Option(help="Timed training steps (batches) per mode and repeat.")] = 20,
    modes: Annotated[str, typer.Option(help="Comma-separated: separate, shared, cached, fused, bf16, loop (default), streams, compiled.")] = DEFAULT_MODES,
    repeats: Annotated[int, typer.Option(help="Times every mode is measured, interleaved with the others.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed steps before the timed ones, in every mode and repeat.")] = 2,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a key: dotted.key=value (TOML value), as in `compare run`.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Sets experiment.device: cpu, cuda, cuda:N, mps, auto.")] = None,
    out: Annotated[Optional[list[Path]], typer.Option(help="Also write the table (repeatable): FILE.md as Markdown with the notes, any other name as CSV.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Time the same training work in each mode: throughput, ratios, GFLOP/s, MFU.

    Modes: separate runs, the shared pass, its speed options (cached, fused, bf16), and a
    hand-written loop. Writes nothing unless --out."""
    from compare.bench.measure import parse_modes, run_bench  # noqa: PLC0415 - keeps `compare --help` fast

    progress = Console(stderr=True)

    def show(m) -> None:
        progress.print(f"repeat {m.repeat + 1}: {m.mode:<8} {m.seconds_per_step:.4f} s/step, {m.throughput:,.0f} samples·models/s", markup=False, highlight=False)

    try:
        overrides = list(set_ or []) + ([f'experiment.device="{device}"'] if device is not None else [])
        result = run_bench(config, overrides, parse_modes(modes), steps, repeats, warmup, on_measurement=show)
        for path in out or []:
            atomic.write_text(path, markdown(result) if path.suffix.lower() in (".md", ".markdown") else result.table().to_csv(index=False))
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)
    print_bench(result)
    for path in out or []:
        console.print(f"wrote {path}", markup=False)
    sys.stdout.flush()

"""`compare leaderboard`, `compare plot`, `compare tensorboard`: reports on finished run
directories. Parsing and printing only; the work is in report/formats/plots/tb_views."""
from __future__ import annotations

import os
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from runner.cli.app import app, console, fail, fit_columns, frame_table
from runner.errors import ReportError, RunDirError

LEFT = {"run", "model", "arch", "status"}


class Format(str, Enum):
    table = "table"
    csv = "csv"
    md = "md"
    latex = "latex"


# At a narrow terminal these go first (all of them are in leaderboard.csv / leaderboard.md);
# the rank, the names, the ranking metric and the status never go, and never shrink.
DROP_FIRST = ["nonfinite", "grad final", "time s", "loss", "95% CI", "tied"]


def rich_table(board, title: str, width: int | None = None) -> tuple[Table, list[str]]:
    """The terminal leaderboard at `width` columns (the console's), and the columns left out."""
    from runner.report.formats import display  # noqa: PLC0415

    frame = display(board, compact=True)
    keep = {"rank", "run", "model", "status", frame.columns[list(frame.columns).index("model") + 1]}
    frame, dropped = fit_columns(frame, width or console.width, DROP_FIRST, keep)
    return frame_table(frame, title, left=LEFT, wrap={"arch"}, whole=keep), dropped


def print_board(board, title: str) -> None:
    from runner.report.formats import evidence_summary  # noqa: PLC0415

    table, dropped = rich_table(board, title)
    console.print(table)
    if dropped:
        console.print(f"left out at {console.width} columns: {', '.join(dropped)} (--format md shows every column)", markup=False, highlight=False)
    for line in evidence_summary(board):
        console.print(line, markup=False, highlight=False)


@app.command("leaderboard")
def leaderboard_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories; several merge into one table (models keyed by run + name).")],
    sort: Annotated[Optional[str], typer.Option(help="Order rows by this leaderboard.csv column (accuracies high first, others low first).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (terminal), csv, md (with the evidence) or latex.")] = Format.table,
    metric: Annotated[str, typer.Option(help="history.csv column to rank by (final epoch, mean over seeds).")] = "test_acc",
    out: Annotated[Optional[Path], typer.Option(help="Write csv/md/latex to this file instead of stdout.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Print or export the leaderboard of one or more finished runs."""
    from runner.report import formats  # noqa: PLC0415 - keeps `compare --help` fast (and torch unimported)
    from runner.report.leaderboard import build  # noqa: PLC0415
    from runner.report.run_data import load_run  # noqa: PLC0415

    try:
        if out is not None and fmt is Format.table:
            raise ReportError("--out writes csv, md or latex: add --format csv|md|latex")
        runs = [load_run(p) for p in run_dirs]
        board = formats.sort(build(runs, metric), sort)
        name = formats.title(runs[0]) if len(runs) == 1 else f"{len(runs)} runs: leaderboard"
        text = {Format.csv: formats.to_csv, Format.md: lambda b: formats.to_markdown(b, name), Format.latex: formats.to_latex}.get(fmt, lambda b: "")(board)
        if out is not None:
            out.write_text(text)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)
    if fmt is Format.table:
        print_board(board, name)
    elif out is not None:
        console.print(f"wrote {out}", markup=False)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("plot")
def plot_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default: RUN_DIR/plots).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Write the PNG plots of a run: learning curves, leaderboard, Pareto fronts, confusion matrices, gradient norms."""
    from runner.report.plots import write_plots  # noqa: PLC0415
    from runner.report.leaderboard import build  # noqa: PLC0415
    from runner.report.run_data import load_run  # noqa: PLC0415

    try:
        run = load_run(run_dir)
        files = write_plots(run, build([run]), out if out is not None else run.path / "plots")
    except Exception as err:  # noqa: BLE001
        fail(err, debug)
    for path in files:
        typer.echo(str(path))


@app.command("tensorboard")
def tensorboard_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (its tb/ folder is opened).")],
    port: Annotated[int, typer.Option(help="Port TensorBoard listens on.")] = 6006,
    dry_run: Annotated[bool, typer.Option(help="Print the command instead of starting TensorBoard.")] = False,
):
    """Start TensorBoard on RUN_DIR/tb: curves, HParams, custom scalars, confusion matrices."""
    tb = run_dir / "tb"
    try:
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such run directory")
        if not tb.is_dir():
            raise RunDirError(f"{tb}: no TensorBoard logs in this run directory")
    except Exception as err:  # noqa: BLE001
        fail(err, debug=False)
    args = ["--logdir", str(tb), "--port", str(port)]
    try:
        import tensorboard.main  # noqa: F401, PLC0415 - only to know whether it is installed
    except ImportError:
        typer.echo(f"tensorboard is not installed here; install it (pip install tensorboard), then run:\n  {shlex.join(['tensorboard', *args])}")
        return
    command = [sys.executable, "-m", "tensorboard.main", *args]
    if dry_run:
        typer.echo(shlex.join(command))
        return
    typer.echo(f"TensorBoard on {tb}: http://localhost:{port}/ (Ctrl-C stops it)")
    sys.stdout.flush()
    # Become TensorBoard (no child process): Ctrl-C and kill reach it directly.
    os.execv(sys.executable, command)

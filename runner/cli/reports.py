"""`compare leaderboard`, `compare plot`, `compare tensorboard`: reports on finished run
directories. Parsing and printing only; the work is in report/formats/plots/tb_views."""
from __future__ import annotations

import os
import shlex
import socket
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compare.cli.app import app, console, fail, fit_columns, frame_table
from compare.errors import ReportError, RunDirError, clip
from compare.rundir import layout

LEFT = {"run", "model", "family", "arch", "status"}


class Format(str, Enum):
    table = "table"
    csv = "csv"
    md = "md"
    latex = "latex"


# At a narrow terminal these go first (all of them are in leaderboard.csv / leaderboard.md);
# the rank, the names, the ranking metric and the status never go, and never shrink.
DROP_FIRST = ["nonfinite", "grad final", "seeds needed", "time s", "loss", "epoch", "95% CI", "MDE", "tied"]


def rich_table(board, title: str, width: int | None = None) -> tuple[Table, list[str]]:
    """The terminal leaderboard at `width` columns (the console's), and the columns left out."""
    from compare.report.formats import display  # noqa: PLC0415

    frame = display(board, compact=True)
    keep = {"rank", "run", "model", "status", frame.columns[list(frame.columns).index("model") + 1]}
    frame, dropped = fit_columns(frame, width or console.width, DROP_FIRST, keep)
    return frame_table(frame, title, left=LEFT, wrap={"arch"}, whole=keep), dropped


def print_board(board, title: str) -> None:
    from compare.report import formats  # noqa: PLC0415
    from compare.report.across import Across  # noqa: PLC0415

    if isinstance(board, Across):
        console.print(frame_table(formats.across_display(board), title, left={"model"}, wrap={"model"}))
        lines = formats.across_summary(board)
    else:
        table, dropped = rich_table(board, title)
        console.print(table)
        if dropped:
            console.print(f"left out at {console.width} columns: {', '.join(dropped)} (--format md shows every column)", markup=False, highlight=False)
        from compare.report.sentences import sentences  # noqa: PLC0415

        lines = sentences(board) + formats.evidence_summary(board)  # the verdict in words, then what backs it
    for line in lines:
        console.print(line, markup=False, highlight=False)


def write_out(out: Path, text: str) -> None:
    """--out FILE: never through a link in a run directory, never into a folder it must invent."""
    from compare import atomic  # noqa: PLC0415
    from compare.rundir.guard import check_no_links  # noqa: PLC0415

    check_no_links(out)
    check_out_folder(out)
    try:
        atomic.write_text(out, text)
    except OSError as err:
        if atomic.is_disk_full(err):
            raise
        raise ReportError(f"--out {clip(str(out))}: cannot write it: {err.strerror or err}") from None


@app.command("leaderboard")
def leaderboard_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories; several merge into one table (models keyed by run + name), or, on different datasets with shared model names, compare the models across the datasets.")],
    sort: Annotated[Optional[str], typer.Option(help="Order rows by this leaderboard.csv column (accuracies high first, others low first); with --per-class, each model's rows by a per-class column (f1, ...: scores high first).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (terminal), csv, md (with the evidence) or latex.")] = Format.table,
    metric: Annotated[Optional[str], typer.Option(help="Metric to rank by (docs/metrics.md: acc, macro_f1, rmse, ...) or a history.csv column, at the selected epoch, mean over seeds; default: the run's report.rank_by (test_acc for classification).")] = None,
    select: Annotated[Optional[str], typer.Option(help="Which epoch to report: final, or best_val (each model's best epoch on val); default: the run's report.select.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write csv/md/latex to this file instead of stdout.")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="One run: per-class precision, recall and F1 of every model instead, then the most-confused pairs (classification; per label F1 and AP for multi-label; per output RMSE, MAE and R² for regression).")] = False,
    by: Annotated[Optional[str], typer.Option(help="family: one row per family (the [[model]] table a sweep or search came from), its best trial chosen on val, compared with a tuning-aware test (docs/tuning.md); default: the run's report.by.")] = None,
    target: Annotated[Optional[float], typer.Option(help="With --by family: report the trials each family needs to reach this expected test score.")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Equivalence margin in the ranked metric's units (0.01 = one point of accuracy): adds equivalent_to_best and non_inferior (TOST, docs/verdict.md); default: the run's report.margin.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Print or export the leaderboard of one or more finished runs."""
    if per_class:
        return per_class_cmd(run_dirs, fmt, out, debug, sort)
    if by not in (None, "model", "family"):
        fail(ReportError(f"--by {by!r}: expected model or family"), debug)
    if by == "family" or (by is None and target is not None):
        return family_cmd(run_dirs, fmt, out, metric, target, debug)
    from compare.report import across, formats  # noqa: PLC0415 - keeps `compare --help` fast (and torch unimported)
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_runs  # noqa: PLC0415

    try:
        if out is not None and fmt is Format.table:
            raise ReportError("--out writes csv, md or latex: add --format csv|md|latex")
        runs = load_runs(run_dirs)  # the shards of one sharded run read as one run
        if across.applies(runs):
            if sort is not None:
                raise ReportError("--sort: runs on different datasets are ordered by average rank (drop --sort, or sort the csv)")
            board = across.build(runs, metric, select, margin=margin)  # no --metric: the one every run ranks by, as `compare plot`
            name = f"{len(runs)} datasets: {board.metric} across datasets"
            render = {Format.csv: formats.across_csv, Format.md: lambda b: formats.across_markdown(b, name), Format.latex: formats.across_latex}
        else:
            board = formats.sort(build(runs, metric, select, margin), sort)
            name = formats.title(runs[0]) if len(runs) == 1 else f"{len(runs)} runs: leaderboard"
            render = {Format.csv: formats.to_csv, Format.md: lambda b: formats.to_markdown(b, name), Format.latex: formats.to_latex}
        text = render.get(fmt, lambda b: "")(board)
        if out is not None:
            write_out(out, text)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)

    def table() -> None:
        print_board(board, name)
        if by is None and len(runs) == 1 and runs[0].config.get("report", {}).get("by") == "family":  # as `compare run` printed it
            family_cmd(run_dirs, fmt, None, metric, None, debug)

    show(fmt, out, text, table)


def family_cmd(run_dirs: list[Path], fmt: "Format", out: Path | None, metric: str | None, target: float | None, debug: bool) -> None:
    """`compare leaderboard RUN --by family`: the family verdict (runner/report/families.py)."""
    from compare.report import families, formats  # noqa: PLC0415
    from compare.report.run_data import load_run  # noqa: PLC0415

    try:
        if len(run_dirs) != 1:
            raise ReportError("--by family reads one run directory")
        if out is not None and fmt is Format.table:
            raise ReportError("--out writes csv or md: add --format csv|md")
        if fmt is Format.latex:
            raise ReportError("--by family writes table, csv or md")
        run = load_run(run_dirs[0])
        board = families.build(run, metric, target if target is not None else run.config.get("report", {}).get("target"))
        name = f"{run.config.get('experiment', {}).get('name') or run.label}: families"
        text = board.table.to_csv(index=False) if fmt is Format.csv else formats.family_markdown(board, name) if fmt is Format.md else ""
        if out is not None:
            write_out(out, text)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)
    show(fmt, out, text, lambda: print_families(board, name))


def show(fmt: "Format", out: Path | None, text: str, table) -> None:
    """What a report command prints: the table (`table()`), where --out wrote, or the csv/md."""
    if fmt is Format.table:
        table()
    elif out is not None:
        console.print(f"wrote {out}", markup=False)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_families(board, title: str) -> None:
    from compare.report.formats import family_display  # noqa: PLC0415

    name = board.metric.removeprefix("test_")
    # At a narrow terminal the verdict (test score, p, tied) outlasts the val score that chose the trial.
    drop_first = ["budget s", "spread", "one-shot", "trials to target", "gain", "MDE", "95% CI", "trials", f"val_{name}"]
    frame, dropped = fit_columns(family_display(board), console.width, drop_first, {"rank", "family", "chosen trial (on val)", f"test_{name}", "p (Holm)", "tied"})
    console.print(frame_table(frame, title, left={"family", "chosen trial (on val)"}, wrap={"chosen trial (on val)"}))
    if dropped:
        console.print(f"left out at {console.width} columns: {', '.join(dropped)} (--format md shows every column)", markup=False, highlight=False)
    for line in board.lines:
        console.print(line, markup=False, highlight=False)


def per_class_cmd(run_dirs: list[Path], fmt: "Format", out: Path | None, debug: bool, sort: str | None = None) -> None:
    """`compare leaderboard RUN --per-class`: the per-class (per-label, per-output) table and,
    for classification, the most-confused pairs (runner/report/per_class.py)."""
    from compare.report import formats  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.per_class import confused_pairs, per_class, sort_rows  # noqa: PLC0415
    from compare.report.run_data import load_run  # noqa: PLC0415

    try:
        if len(run_dirs) != 1:
            raise ReportError("--per-class reads one run directory")
        run = load_run(run_dirs[0])
        order = list(build([run]).table["model"])
        table = per_class(run, order)
        if table.empty:
            raise ReportError(f"{run.path}: --per-class: the run's task is {run.task[0]}, which has neither classes, labels nor outputs to split by")
        table = sort_rows(table, sort)
        pairs = confused_pairs(run, order)
        if out is not None and fmt is Format.table:
            raise ReportError("--out writes csv or md: add --format csv|md")
        text = ""
        if fmt is Format.csv:  # one table a file: the pairs are in the terminal and md output
            text = table.to_csv(index=False)
        elif fmt is Format.md:
            text = formats.markdown_table(table.round(4).astype(str), left=("model", "class", "label"))
            if not pairs.empty:
                text += "\n\nMost-confused pairs (true -> predicted; count per seed, share of the true class):\n\n" + formats.markdown_table(pairs.round(4).astype(str), left=("model", "true", "predicted"))
        if out is not None:
            write_out(out, text)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)

    def print_table() -> None:
        numbers = [c for c in ("precision", "recall", "f1", "ap", "rmse", "mae", "r2", "iou", "acc", "dice") if c in table]
        shown = table.assign(**{c: table[c].map(lambda v: f"{v:.4f}") for c in numbers}, **{c: table[c].map("{:g}".format) for c in ("support", "predicted", "output") if c in table})
        what = "per class" if "class" in table else "per label" if "label" in table else "per output"
        name = run.config.get('experiment', {}).get('name') or run.label
        console.print(frame_table(shown, f"{name}: {what} (test, the reported epoch)", left={"model", "class", "label"}, wrap={"model", "class", "label"}))
        if not pairs.empty:
            cells = pairs.assign(count=pairs["count"].map("{:g}".format), share=pairs["share"].map("{:.1%}".format))
            console.print(frame_table(cells, f"{name}: most-confused pairs (true -> predicted; count per seed, share of the true class)", left={"model", "true", "predicted"}, wrap={"model", "true", "predicted"}))

    show(fmt, out, text, print_table)


@app.command("plot")
def plot_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory; or several on different datasets: their critical-difference diagram.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default: RUN_DIR/plots; needed with several runs).")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Several runs: the metric the models are ranked by (as `compare leaderboard --metric`); default: the one every run ranks by (report.rank_by).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Write the PNG plots of a run: learning curves, leaderboard, Pareto fronts, confusion matrices, gradient norms.
    Several runs on different datasets: critical_difference.png (Demšar's diagram of average ranks)."""
    from compare.report import across  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_runs  # noqa: PLC0415

    from compare.atomic import is_disk_full  # noqa: PLC0415

    try:
        runs = load_runs(run_dirs)  # the shards of one sharded run read as one run
        if len(runs) == 1 and runs[0].shards and out is None:
            raise ReportError("several shards of one run: give --out FOLDER for the plots (or `compare merge` them into one run first)")
        if len(runs) == 1:
            from compare.report.plots import write_plots  # noqa: PLC0415

            from compare.report.finalize import family_board  # noqa: PLC0415

            notes = list(runs[0].notes)  # damaged prediction files, then plots skipped
            files = write_plots(runs[0], build(runs), out if out is not None else runs[0].path / layout.PLOTS, notes, family_board(runs[0]))
            for note in notes:  # on stderr: stdout lists the files written, one a line, for scripts
                typer.echo(f"note: {note}", err=True)
        else:
            from compare.report.cd_plot import write_cd_plot  # noqa: PLC0415

            if not across.applies(runs):
                raise ReportError("several runs plot their critical-difference diagram: they must be on different datasets ([data] settings) and share model names; plot one run at a time otherwise")
            if out is None:
                raise ReportError("several runs: give --out FOLDER for critical_difference.png")
            files = [write_cd_plot(across.build(runs, metric), out)]
    except OSError as err:  # the folder cannot be made or written (a file in the way, a name too long)
        fail(err if is_disk_full(err) else ReportError(f"cannot write the plots: {clip(str(err.filename or out))}: {err.strerror or err}"), debug)
    except Exception as err:  # noqa: BLE001
        fail(err, debug)
    for path in files:
        typer.echo(str(path))


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory; or several, merged into one report as `compare leaderboard` merges them (then give --out).")],
    out: Annotated[Optional[Path], typer.Option(help="The HTML file to write (default: RUN_DIR/report.html; needed with several runs).")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Metric to rank by, as `compare leaderboard --metric`; default: the run's report.rank_by.")] = None,
    select: Annotated[Optional[str], typer.Option(help="Which epoch to report: final or best_val; default: the run's report.select.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Write report.html: the verdict in sentences, the leaderboard, plots and provenance in one
    self-contained file (no network needed to open it: send it as an attachment)."""
    from compare.report import across  # noqa: PLC0415
    from compare.report.finalize import family_board, write_report  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_runs  # noqa: PLC0415

    try:
        runs = load_runs(run_dirs)  # the shards of one sharded run read as one run
        if (len(runs) > 1 or runs[0].shards) and out is None:
            raise ReportError("several runs (or shards) make one report: give --out FILE.html")
        if out is not None:
            check_out_folder(out)
        board = across.build(runs, metric, select) if len(runs) > 1 and across.applies(runs) else build(runs, metric, select)
        path = write_report(runs, board, family_board(runs[0]) if len(runs) == 1 and metric is None else None, out)
    except OSError as err:  # a folder in the way, no permission: the user's to fix (a full disk: fail says so)
        from compare.atomic import is_disk_full  # noqa: PLC0415

        fail(err if is_disk_full(err) else ReportError(f"cannot write {clip(str(out or err.filename))}: {err.strerror or err}"), debug)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)
    typer.echo(str(path))


def check_out_folder(out: Path) -> None:
    """--out FILE (leaderboard, report): its folder must exist; compare invents none."""
    if not out.parent.is_dir():
        raise ReportError(f"--out {clip(str(out))}: the folder {clip(str(out.parent))} does not exist; create it first")


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port (TensorBoard would fail to start there)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for TensorBoard too
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@app.command("tensorboard")
def tensorboard_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (its tb/ folder is opened).")],
    port: Annotated[int, typer.Option(help="Port TensorBoard listens on.")] = 6006,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: localhost, this machine only).")] = None,
    bind_all: Annotated[bool, typer.Option("--bind-all", help="Listen on every network interface (reachable from other machines).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the command instead of starting TensorBoard.")] = False,
):
    """Start TensorBoard on RUN_DIR/tb: curves, HParams, custom scalars, confusion matrices."""
    tb = run_dir / layout.TB
    shown_host = "0.0.0.0" if bind_all else host or "localhost"
    try:
        if host is not None and bind_all:
            raise ReportError("--host and --bind-all both choose the address: give one of them")
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such run directory")
        if not tb.is_dir():
            raise RunDirError(f"{tb}: no TensorBoard logs in this run directory")
        if port_in_use("" if bind_all else host or "localhost", port):
            raise ReportError(f"port {port} on {shown_host} is already in use (another TensorBoard?): pick a free one with --port {port + 1}")
    except Exception as err:  # noqa: BLE001
        fail(err, debug=False)
    args = ["--logdir", str(tb), "--port", str(port)] + (["--bind_all"] if bind_all else ["--host", host] if host else [])
    try:
        import tensorboard.main  # noqa: F401, PLC0415 - only to know whether it is installed
    except ImportError:
        typer.echo(f"tensorboard is not installed here; install it (pip install tensorboard), then run:\n  {shlex.join(['tensorboard', *args])}")
        return
    command = [sys.executable, "-m", "tensorboard.main", *args]
    if dry_run:
        typer.echo(shlex.join(command))
        return
    typer.echo(f"TensorBoard on {tb}: http://{'localhost' if bind_all else shown_host}:{port}/ (Ctrl-C stops it)")
    sys.stdout.flush()
    # Become TensorBoard (no child process): Ctrl-C and kill reach it directly.
    os.execv(sys.executable, command)

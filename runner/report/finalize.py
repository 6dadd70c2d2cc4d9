"""The end of a run, and the only place reports touch the disk: leaderboard.csv,
leaderboard.md, the TensorBoard comparison views, plots/*.png and report.html, all from the run directory.

`compare run` calls `finalize_run` after the last seed; `compare leaderboard` and
`compare plot` read the same files, so they agree with what the run printed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from compare import atomic
from compare.report import families
from compare.report.formats import family_markdown, title, to_markdown
from compare.report.leaderboard import Leaderboard, build
from compare.report.run_data import RunData, load_run
from compare.rundir import layout
from compare.rundir.guard import check_no_links


def write_leaderboard(run: RunData, board: Leaderboard) -> list[Path]:
    csv, md = (check_no_links(run.path / name, run.path) for name in (layout.LEADERBOARD_CSV, layout.LEADERBOARD_MD))
    table = board.table
    if "flops_per_sample" in table:  # n/a: not counted (a note said why); read_csv reads it back as NaN
        table = table.assign(flops_per_sample=["n/a" if pd.isna(v) else v for v in table["flops_per_sample"]])
    atomic.write_csv(csv, table)
    atomic.write_text(md, to_markdown(board, title(run)))
    return [csv, md]


def write_families(run: RunData, board: families.FamilyBoard) -> list[Path]:
    """families.csv, families.md and tuning_curves.csv: the family verdict of docs/tuning.md."""
    csv, md, curves = (check_no_links(run.path / name, run.path) for name in (layout.FAMILIES_CSV, layout.FAMILIES_MD, layout.TUNING_CURVES))
    atomic.write_csv(csv, board.table)
    atomic.write_csv(curves, board.curves)
    atomic.write_text(md, family_markdown(board, f"{run.config.get('experiment', {}).get('name') or run.label}: families"))
    return [csv, md, curves]


def write_report(runs: list[RunData], board, by_family: families.FamilyBoard | None = None, out: Path | None = None) -> Path:
    """report.html (runner/report/html.py): RUN/report.html for one run, else `out`."""
    from compare.report.html import page  # noqa: PLC0415 - reads the PNGs; per-class tables need sklearn

    path = check_no_links(out if out is not None else runs[0].path / layout.REPORT_HTML, None if out is not None else runs[0].path)
    atomic.write_text(path, page(runs, board, by_family))
    return path


def family_board(run: RunData) -> families.FamilyBoard | None:
    """The family verdict where the run asks for it (`[report] by = "family"`)."""
    report = run.config.get("report", {})
    return families.build(run, target=report.get("target")) if report.get("by") == "family" else None


def finalize_run(run_dir: str | Path, plots: bool = True) -> Leaderboard:
    """Leaderboard files (and the family verdict's, with `[report] by = "family"`), TensorBoard
    views (where tb/ exists) and, unless `plots` is False, the PNGs in RUN_DIR/plots/. Returns
    the leaderboard."""
    run = load_run(run_dir)
    board = build([run])
    write_leaderboard(run, board)
    by_family = family_board(run)
    if by_family is not None:
        write_families(run, by_family)
    if (run.path / layout.TB).is_dir():
        from compare.report.tb_views import write_tb_views  # noqa: PLC0415 - imports tensorboard + matplotlib

        write_tb_views(run)
    if plots:
        from compare.report.plots import write_plots  # noqa: PLC0415 - imports seaborn

        write_plots(run, board, run.path / layout.PLOTS, board.evidence.notes, by_family)  # a plot that fails is a note, not a failed run
    write_report([run], board, by_family)  # last: it embeds the plots
    return board

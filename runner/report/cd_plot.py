"""critical_difference.png: Demšar's critical-difference diagram (2006, Fig. 1) of an Across.

Models sit on an average-rank axis, rank 1 (best) at the left; the best half is labelled on the
left, the rest on the right. A thick bar joins models whose average ranks differ by less than
the Nemenyi critical difference (not significantly different); the CD itself is drawn above
the axis. Laid out in inches, so names of 30+ characters fit whatever the number of models.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless unless the caller already chose a backend
    matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from compare import atomic  # noqa: E402
from compare.errors import ReportError  # noqa: E402
from compare.report.across import Across  # noqa: E402
from compare.rundir.guard import check_no_links  # noqa: E402
from compare.rundir.layout import CRITICAL_DIFFERENCE_PNG  # noqa: E402

DPI = 120
FONT = 10  # points
CHAR_IN = 0.085  # average width of one character at FONT points, inches (DejaVu Sans, with slack)
AXIS_IN = 6.0  # length of the rank axis
ROW_IN = 0.26  # one label row
BAR_IN = 0.15  # one group bar
MIN_MARGIN_IN = 1.7  # keeps the figure wide enough for the two subtitle lines


def cd_figure(a: Across) -> Figure:
    table = a.table[a.table["in_test"]].sort_values("avg_rank", kind="stable")
    names, ranks = list(table["model"]), list(table["avg_rank"])
    k = len(names)
    if k < 2:
        raise ReportError(f"critical-difference diagram: fewer than 2 models have {a.metric} on every dataset")
    labels = [f"{n} ({r:.2f})" for n, r in zip(names, ranks)]
    left, right = list(range((k + 1) // 2)), list(range(k - 1, (k + 1) // 2 - 1, -1))  # right: worst first
    span = min(a.cd, k - 1) if a.cd is not None else None  # the CD bar, from rank 1; clipped to the axis when CD exceeds it
    cd_text = f"CD = {a.cd:.2f}" + ("" if span == a.cd else " (longer than the axis)") if a.cd is not None else ""
    # the right margin also holds the CD label where the bar reaches the axis's end (k = 2, few datasets)
    margin = max(max(len(s) for s in labels) * CHAR_IN + 0.5, MIN_MARGIN_IN, (len(cd_text) * CHAR_IN + 0.3) if span == k - 1 else 0)
    width = AXIS_IN + 2 * margin
    top, axis_y = 1.0, 1.6  # title block; the rank axis
    bars_y = axis_y + 0.25
    rows_y = bars_y + len(a.groups) * BAR_IN + 0.2
    left_out = [m for m in a.table["model"] if m not in names]
    height = rows_y + max(len(left), len(right)) * ROW_IN + (0.45 if left_out else 0.2)

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, in inches
    ax.axis("off")
    x = lambda r: margin + (r - 1) / (k - 1) * AXIS_IN  # noqa: E731 - rank -> inches

    ax.plot([x(1), x(k)], [axis_y, axis_y], color="black", lw=1.2)
    for r in range(1, k + 1):
        ax.plot([x(r), x(r)], [axis_y, axis_y - 0.1], color="black", lw=1.2)
        ax.text(x(r), axis_y - 0.14, str(r), ha="center", va="bottom", fontsize=FONT)
    for r in range(1, k):
        ax.plot([x(r + 0.5)] * 2, [axis_y, axis_y - 0.05], color="black", lw=0.8)
    ax.text(x(1) - 0.1, axis_y, "average rank (1 = best)", ha="right", va="center", fontsize=FONT - 1, color="0.35")

    if a.cd is not None:
        cd_y = top + 0.1
        ax.plot([x(1), x(1 + span)], [cd_y, cd_y], color="black", lw=1.2)
        for end in (1, 1 + span):
            ax.plot([x(end)] * 2, [cd_y - 0.05, cd_y + 0.05], color="black", lw=1.2)
        ax.text(x(1 + span) + 0.1, cd_y, cd_text, ha="left", va="center", fontsize=FONT)

    position = {m: i for i, m in enumerate(names)}
    for g, group in enumerate(a.groups):
        y = bars_y + g * BAR_IN
        lo, hi = min(ranks[position[m]] for m in group), max(ranks[position[m]] for m in group)
        ax.plot([x(lo) - 0.06, x(hi) + 0.06], [y, y], color="black", lw=3.5, solid_capstyle="round")

    for row, i in enumerate(left):
        y = rows_y + row * ROW_IN
        ax.plot([x(ranks[i]), x(ranks[i]), margin - 0.15], [axis_y, y, y], color="black", lw=0.9)
        ax.text(margin - 0.2, y, labels[i], ha="right", va="center", fontsize=FONT)
    for row, i in enumerate(right):
        y = rows_y + row * ROW_IN
        ax.plot([x(ranks[i]), x(ranks[i]), margin + AXIS_IN + 0.15], [axis_y, y, y], color="black", lw=0.9)
        ax.text(margin + AXIS_IN + 0.2, y, labels[i], ha="left", va="center", fontsize=FONT)

    n = len(a.datasets)
    if a.friedman is not None:
        test = f"Friedman p = {a.friedman.p:.3g}, Iman-Davenport p = {a.friedman.f_p:.3g}"
    else:
        test = "no Friedman test (needs at least 3 datasets and 3 models)"
    ax.text(width / 2, 0.12, f"Critical difference diagram: {a.metric} over {n} datasets", ha="center", va="top", fontsize=FONT + 2, weight="bold")
    ax.text(width / 2, 0.42, f"Nemenyi test, alpha = {a.alpha:g}, k = {k} models, N = {n} datasets: bars join models not significantly different", ha="center", va="top", fontsize=FONT - 1)
    ax.text(width / 2, 0.64, test, ha="center", va="top", fontsize=FONT - 1)
    if left_out:
        ax.text(width / 2, height - 0.15, f"left out (no {a.metric} on every dataset): {', '.join(left_out)}", ha="center", va="bottom", fontsize=FONT - 1, color="0.35")
    return fig


def write_cd_plot(a: Across, out_dir: str | Path) -> Path:
    out = check_no_links(Path(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    path = check_no_links(out / CRITICAL_DIFFERENCE_PNG)
    fig = cd_figure(a)
    with atomic.atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path

"""plots/tuning_curves.png: per family, what n trials of its search are expected to give
(runner/report/families.py computes the curves; docs/tuning.md reads them)."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from compare.report.families import FamilyBoard
from compare.report.figure_kit import _figure, legend_panel, model_colours, wrap


def tuning_curves(board: FamilyBoard, run_name: str) -> Figure | None:
    curves = board.curves
    if curves.empty:
        return None
    name = board.metric.removeprefix("test_")
    families = list(board.table["family"])  # verdict order: legend reads best first
    colours = model_colours(families)
    has_cost = curves["cost_s"].notna().any()
    panels = [("n", "trials tuned (n)", f"expected test {name}", "the val-selected best of n trials (val: dashed)")]
    if has_cost:
        panels.append(("cost_s", "training seconds on n trials (n x a trial's mean)", f"expected test {name}", "the same against compute"))
    if curves["p_best"].notna().any():
        panels.append(("n", "trials tuned (n)", "share of joint resamples", "P(family is best at n trials)"))
    labels = [f"{f} ({t} trials)" for f, t in zip(families, board.table["trials"])]
    fig, axes, key = _figure(ncols=len(panels), width=5.0, height=4.2, legend=labels)
    for ax, (x, xlabel, ylabel, heading) in zip(axes[0], panels):
        for family in families:
            c = curves[curves["family"] == family]
            if heading.startswith("P("):
                c = c[c["p_best"].notna()]
                ax.plot(c[x], c["p_best"], color=colours[family], marker="o", ms=3)
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.plot(c[x], c["expected_test"], color=colours[family], marker="o", ms=3)
                ax.fill_between(c[x], c["test_low"], c["test_high"], color=colours[family], alpha=0.15, linewidth=0)
                ax.plot(c[x], c["expected_val"], color=colours[family], linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        if x == "n":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colours[f], marker="o", ms=3, label=label) for f, label in zip(families, labels)]
    handles.append(Line2D([], [], color="grey", linestyle="--", label="expected best val of n"))
    legend_panel(key, handles, "family")
    summary = board.lines[-1] if board.lines else ""
    fig.suptitle(wrap(f"{run_name}: tuning curves (band: 95% over resampled trials and test samples)\n{summary}", fig.get_figwidth(), 10), fontsize=10)
    return fig

"""The confusion matrices: one per model in confusion_matrices.png (runner/report/plots.py
lists it), one per run as TensorBoard's image (runner/report/tb_views.py). Past
task_plots.MANY_CLASSES classes a matrix shows only the mistakes, every 10th class named;
confused_pairs.png (runner/report/task_plots.py) names the pairs."""
from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from compare.report import stats, task_plots
from compare.report.figure_kit import _figure, wrap
from compare.report.run_data import RunData
from compare.rundir import layout


def class_names(run: RunData, model: str) -> list[str]:
    """env.json's class names, else 0..k-1 from the largest label seen."""
    if run.classes:
        return run.classes
    k = max(int(max(p["target"].max(), p["final"].max())) for p in run.predictions[model].values()) + 1
    return [str(i) for i in range(k)]


def confusion_heatmap(ax, counts: np.ndarray, classes: list[str], vmax: float | None = None) -> str:
    """Row-normalised (recall per true class), so rare classes read like common ones. Past
    task_plots.MANY_CLASSES classes only the mistakes, the diagonal left blank and the colours
    up to `vmax` (the largest mistake rate), every 10th class named: a full-scale 100 x 100
    matrix shows its diagonal and specks. Returns the colour bar's label."""
    k = len(classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    if k <= task_plots.MANY_CLASSES:
        sns.heatmap(rates, ax=ax, vmin=0, vmax=1, cmap="Blues", square=True, cbar=False, annot=k <= 12, fmt=".2f",
                    annot_kws={"fontsize": 5}, xticklabels=classes, yticklabels=classes)
        label = "fraction of the true class"
    else:
        # Blank where no mistake; the palette starts at a visible red, so one sample in 20 still shows.
        reds = mcolors.ListedColormap(sns.color_palette("Reds", 256)[60:])
        sns.heatmap(rates, ax=ax, vmin=0, vmax=vmax or max(off_diagonal_max(counts), 0.01), cmap=reds, square=True, cbar=False,
                    mask=np.eye(k, dtype=bool) | (counts == 0), xticklabels=False, yticklabels=False)
        ax.plot([0, k], [0, k], color="#bbbbbb", linewidth=0.6, zorder=0)  # where the (left out) diagonal runs
        ticks = np.arange(0, k, 10 if k <= 200 else 10 * -(-k // 200))
        ax.set_xticks(ticks + 0.5, [classes[i] for i in ticks], fontsize=7, rotation=90)
        ax.set_yticks(ticks + 0.5, [classes[i] for i in ticks], fontsize=7)
        for side in ax.spines.values():
            side.set(visible=True, color="#888888", linewidth=0.6)
        label = "fraction of the true class predicted as another (diagonal left out)"
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return label


def off_diagonal_max(counts: np.ndarray) -> float:
    """The largest share of a true class given to one other class."""
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(rates, 0)
    return float(rates.max()) if rates.size else 0.0


def confusion_figure(counts: np.ndarray, classes: list[str], title: str) -> Figure:
    """One model's matrix (TensorBoard's per-run image)."""
    side = 4.2 if len(classes) <= 12 else 6
    fig, ((ax,),), _ = _figure(1, width=side + 1, height=side, style="white")
    label = confusion_heatmap(ax, counts, classes)
    fig.colorbar(ax.collections[0], ax=ax, shrink=0.8, label=label)
    ax.set_title(wrap(title, side, 10), fontsize=10)
    return fig


def confusion_grid(run: RunData, order: list[str], run_name: str, scores: dict[str, str] | None = None) -> Figure | None:
    """One matrix per model, titled with the rank metric's value (`scores`; accuracy by default)."""
    models = [m for m in order if run.predictions.get(m) and all("final" in p for p in run.predictions[m].values())]
    if not models or run.task[0] != "classification":
        return None  # no classes (regression, multi-label)
    classes = class_names(run, models[0])
    k = len(classes)
    ncols = min(4, len(models))
    nrows = -(-len(models) // ncols)
    side = 3.4 if k <= 12 else 4.5
    fig, axes, _ = _figure(ncols, width=side, height=side + 0.4, nrows=nrows, style="white")
    seeds = set()
    summed = {m: sum(stats.confusion_matrix(p["target"], run.selected_predictions(m, seed)[0], k) for seed, p in run.predictions[m].items()) for m in models}
    vmax = max(max(off_diagonal_max(c) for c in summed.values()), 0.01)  # one colour scale for every panel (one colour bar)
    for ax, model in zip(axes.flat, models):
        counts = summed[model]
        seeds |= set(run.predictions[model])
        label = confusion_heatmap(ax, counts, classes, vmax)
        score = (scores or {}).get(model) or f"acc {np.trace(counts) / max(counts.sum(), 1):.3f}"
        ax.set_title(wrap(model, side - 0.6, 9) + f"\n{score}", fontsize=9)
    for ax in axes.flat[len(models):]:
        ax.set_axis_off()
    fig.colorbar(axes.flat[0].collections[0], ax=axes, shrink=0.6, label=label)
    epoch = "best epoch on val" if run.config.get("report", {}).get("select") == "best_val" else "final epoch"
    mistakes = f"; only the mistakes, colours up to {vmax:.0%}, pairs: {layout.CONFUSED_PAIRS_PNG}" if k > task_plots.MANY_CLASSES else ""
    score = f"; titles: {next(iter(scores.values())).split()[0]} (mean over seeds)" if scores else ""
    fig.suptitle(wrap(f"{run_name}: confusion matrices (test, {epoch}, {len(seeds)} seed(s) summed, rows normalised{mistakes}{score})", side * ncols), fontsize=11)
    return fig

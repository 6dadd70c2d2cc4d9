"""PNG plots of a run (seaborn): one file per question, titled, axes labelled with units.

    learning_curves.png     test accuracy and train loss vs epoch, band = 95% t-interval over seeds
    leaderboard.png         final test accuracy with 95% CI whiskers; tied-with-best marked
    pareto_params.png       accuracy vs parameter count, Pareto front drawn
    pareto_train_time.png   accuracy vs training time, Pareto front drawn
    confusion_matrices.png  one confusion matrix per model (final epoch, seeds summed)
    grad_norms.png          total gradient norm per epoch (mean and max over the epoch's steps)

Figures are built with matplotlib's Figure API (no pyplot state, nothing shown on screen),
so plotting works headless and never touches a caller's open figures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless unless the caller already chose a backend
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from runner.report import stats  # noqa: E402
from runner.report.leaderboard import Leaderboard  # noqa: E402
from runner.report.run_data import RunData  # noqa: E402

DPI = 120
EPOCH_LABEL = "epoch (passes over the train split)"


def write_plots(run: RunData, board: Leaderboard, out_dir: str | Path) -> list[Path]:
    """Every plot this run has data for; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = list(board.table["model"])  # rank order: legends read best first
    colours = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))))
    history = run.history.replace([np.inf, -np.inf], np.nan)
    n_seeds = len(run.seeds)
    title = run.config.get("experiment", {}).get("name") or run.label
    title = title if title == run.label else f"{title} ({run.label})"  # experiment and run directory
    makers = {
        "learning_curves.png": lambda: learning_curves(history, order, colours, n_seeds, title),
        "leaderboard.png": lambda: leaderboard_chart(board, title),
        "pareto_params.png": lambda: pareto(board, "params", "parameters (count, log scale)", "parameter count", title),
        "pareto_train_time.png": lambda: pareto(board, "train_time_s", "training time per seed (s, log scale)", "training time", title),
        "confusion_matrices.png": lambda: confusion_grid(run, order, title),
        "grad_norms.png": lambda: grad_norms(history, order, colours, n_seeds, title),
    }
    written = []
    for filename, make in makers.items():
        fig = make()
        if fig is None:  # nothing to draw (e.g. no predictions saved: no confusion matrices)
            continue
        fig.savefig(out / filename, dpi=DPI)  # constrained layout already fits titles and outside legends
        written.append(out / filename)
    return written


def _band(values) -> tuple[float, float]:
    """seaborn errorbar callable: the 95% t-interval over seeds (a point with one seed)."""
    iv = stats.t_interval(values)
    return (iv.low, iv.high) if iv.method == "t" else (iv.mean, iv.mean)


def _accuracy_band(values) -> tuple[float, float]:
    low, high = _band(values)
    return max(0.0, low), min(1.0, high)  # an accuracy cannot leave [0, 1]


def _geometric_mean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _log_band(values) -> tuple[float, float]:
    """Losses and norms are positive and skewed: the t-interval is taken on their logarithm
    (around the geometric mean), so the band stays positive on a log axis."""
    low, high = _band(np.log(np.asarray(values, dtype=float)))
    return float(np.exp(low)), float(np.exp(high))


def _figure(ncols: int = 1, width: float = 6.5, height: float = 4.5, **kw) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def _curves(fig: Figure, axes, history: pd.DataFrame, panels, order, colours, n_seeds: int, title: str) -> Figure:
    for ax, (column, label, log) in zip(axes, panels):
        data = history[history[column].notna()] if column in history else history.iloc[:0]
        log = log and len(data) and (data[column] > 0).all()
        if len(data):
            band = _log_band if log else _accuracy_band if "acc" in column else _band
            sns.lineplot(data=data, x="epoch", y=column, hue="model", hue_order=[m for m in order if m in set(data["model"])],
                         palette=colours, estimator=_geometric_mean if log else "mean", errorbar=band if n_seeds > 1 else None,
                         marker="o", markersize=4, ax=ax, legend=ax is axes[0])
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(label + (", log scale" if log else ""))
        if log:
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(0, -0.18), ncol=min(4, len(order)), title="model", frameon=False)
    fig.suptitle(title)
    return fig


def learning_curves(history, order, colours, n_seeds: int, run_name: str) -> Figure:
    fig, axes = _figure(2)
    panels = [("test_acc", "test accuracy (fraction correct)", False), ("train_loss", "train loss (mean per sample)", True)]
    spread = f"{n_seeds} seeds: mean (geometric on log axes), band = 95% t-interval" if n_seeds > 1 else "one seed"
    fig = _curves(fig, axes, history, panels, order, colours, n_seeds, f"{run_name}: learning curves ({spread})")
    axes[0].set_title("test accuracy per epoch")
    axes[1].set_title("train loss per epoch")
    return fig


def grad_norms(history, order, colours, n_seeds: int, run_name: str) -> Figure | None:
    if "grad_norm_mean" not in history:
        return None
    fig, axes = _figure(2)
    panels = [("grad_norm_mean", "total gradient L2 norm", True), ("grad_norm_max", "total gradient L2 norm", True)]
    spread = f"{n_seeds} seeds: geometric mean, band = 95% t-interval of the log" if n_seeds > 1 else "one seed"
    title = f"{run_name}: gradient norms ({spread})"
    if "grad_nonfinite" in history and history["grad_nonfinite"].fillna(0).sum() > 0:
        bad = history[history["grad_nonfinite"] > 0].groupby("model")["grad_nonfinite"].sum()
        title += "\nsteps with a non-finite gradient (left out of the norms): " + ", ".join(f"{m} {int(n)}" for m, n in bad.items())
    fig = _curves(fig, axes, history, panels, order, colours, n_seeds, title)
    axes[0].set_title("mean over the epoch's steps")
    axes[1].set_title("max over the epoch's steps")
    return fig


def _ci_errors(table: pd.DataFrame) -> np.ndarray:
    mean = table["test_acc_mean"].to_numpy(float)
    low = np.where(np.isfinite(table["test_acc_ci95_low"].to_numpy(float)), table["test_acc_ci95_low"], mean)
    high = np.where(np.isfinite(table["test_acc_ci95_high"].to_numpy(float)), table["test_acc_ci95_high"], mean)
    return np.vstack([mean - low, high - mean])


GROUPS = {  # tied_with_best verdict -> (legend label, colour, marker)
    "best": ("best (rank 1)", "#1a9641", "*"),
    "tied": ("tied with best (Holm p ≥ 0.05)", "#2b83ba", "o"),
    "worse": ("worse than best (Holm p < 0.05)", "#d7191c", "X"),
    "untested": ("no paired test", "#7f7f7f", "s"),
}


def _verdicts(table: pd.DataFrame) -> list[str]:
    out = []
    for rank, p, tied in zip(table["rank"], table["p_vs_best"], table["tied_with_best"]):
        if rank == 1 and pd.isna(p):
            out.append("best")
        elif pd.isna(tied):
            out.append("untested")
        else:
            out.append("tied" if tied else "worse")
    return out


def leaderboard_chart(board: Leaderboard, run_name: str) -> Figure:
    table = board.table
    fig, (ax,) = _figure(1, width=8, height=1.2 + 0.45 * len(table))
    y = np.arange(len(table))
    errors = _ci_errors(table)
    verdicts = _verdicts(table)
    for group, (label, colour, marker) in GROUPS.items():
        idx = [i for i, v in enumerate(verdicts) if v == group]
        if idx:
            ax.errorbar(table["test_acc_mean"].to_numpy(float)[idx], y[idx], xerr=errors[:, idx], fmt=marker, color=colour,
                        markersize=11 if marker == "*" else 8, capsize=4, label=label)
    for yi, m in zip(y, table["test_acc_mean"]):
        if np.isfinite(m):
            ax.annotate(f"{m:.4f}", (m, yi), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_yticks(y, [f"{r}. {m}" for r, m in zip(table["rank"], table["model"])])
    ax.set_ylim(len(table) - 0.5, -0.9)  # best on top, room for its value label under the title
    n_test = board.evidence.test_samples
    ax.set_xlabel(f"final test accuracy (fraction of {n_test:,} test samples)" if n_test else "final test accuracy (fraction correct)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    seeds = len(board.evidence.seeds)
    how = f"mean over {seeds} seeds, whiskers = 95% t-interval" if seeds > 1 else "one seed, whiskers = 95% Wilson interval"
    ax.set_title(f"{run_name}: leaderboard ({how})")
    return fig


def pareto(board: Leaderboard, cost: str, xlabel: str, what: str, run_name: str) -> Figure | None:
    table = board.table
    if cost not in table or not np.isfinite(table[cost].to_numpy(float)).any():
        return None
    fig, (ax,) = _figure(1, width=7.5, height=5)
    x, acc = table[cost].to_numpy(float), table["test_acc_mean"].to_numpy(float)
    front = stats.pareto_front(x, acc)
    ax.errorbar(x, acc, yerr=_ci_errors(table), fmt="none", ecolor="#999999", capsize=3, zorder=1)
    ax.scatter(x[~front], acc[~front], s=45, color="#7f7f7f", label="dominated", zorder=2)
    ax.scatter(x[front], acc[front], s=60, color="#d7191c", label="Pareto front", zorder=3)
    order = np.argsort(x[front])
    ax.step(x[front][order], acc[front][order], where="post", color="#d7191c", linewidth=1.5, zorder=2)
    for xi, yi, name in zip(x, acc, table["model"]):
        if np.isfinite(xi) and np.isfinite(yi):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if (x[np.isfinite(x)] > 0).all():
        ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final test accuracy (fraction correct)")
    ax.legend(loc="lower right", frameon=False)
    ax.set_title(f"{run_name}: accuracy vs {what}\n(front: no other model is both cheaper and more accurate; bars = 95% CI)")
    return fig


def class_names(run: RunData, model: str) -> list[str]:
    """env.json's class names, else 0..k-1 from the largest label seen."""
    if run.classes:
        return run.classes
    k = max(int(max(p["target"].max(), p["final"].max())) for p in run.predictions[model].values()) + 1
    return [str(i) for i in range(k)]


def confusion_heatmap(ax, counts: np.ndarray, classes: list[str]) -> None:
    """Row-normalised (recall per true class), so rare classes read like common ones."""
    k = len(classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ticks = classes if k <= 20 else False
    sns.heatmap(rates, ax=ax, vmin=0, vmax=1, cmap="Blues", square=True, cbar=False, annot=k <= 12, fmt=".2f",
                annot_kws={"fontsize": 6}, xticklabels=ticks, yticklabels=ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")


def confusion_figure(counts: np.ndarray, classes: list[str], title: str) -> Figure:
    """One model's matrix (TensorBoard's per-run image)."""
    side = 4.2 if len(classes) <= 12 else 6
    with sns.axes_style("white"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(side + 1, side), layout="constrained")
        ax = fig.subplots()
    confusion_heatmap(ax, counts, classes)
    fig.colorbar(ax.collections[0], ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_title(title)
    return fig


def confusion_grid(run: RunData, order: list[str], run_name: str) -> Figure | None:
    models = [m for m in order if run.predictions.get(m)]
    if not models:
        return None
    classes = class_names(run, models[0])
    k = len(classes)
    ncols = min(4, len(models))
    nrows = -(-len(models) // ncols)
    side = 3.2 if k <= 12 else 4.5
    with sns.axes_style("white"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(side * ncols + 1, side * nrows + 0.8), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
    seeds = set()
    for ax, model in zip(axes.flat, models):
        counts = sum(stats.confusion_matrix(p["target"], p["final"], k) for p in run.predictions[model].values())
        seeds |= set(run.predictions[model])
        confusion_heatmap(ax, counts, classes)
        ax.set_title(f"{model} (acc {np.trace(counts) / max(counts.sum(), 1):.3f})")
    for ax in axes.flat[len(models):]:
        ax.set_axis_off()
    fig.colorbar(axes.flat[0].collections[0], ax=axes, shrink=0.6, label="fraction of the true class")
    fig.suptitle(f"{run_name}: confusion matrices (final epoch, {len(seeds)} seed(s) summed, rows normalised)")
    return fig

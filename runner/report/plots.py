"""PNG plots of a run (seaborn style, matplotlib Figure API): one file per question, titled,
axes labelled with units, laid out for 2 to 20+ models with names of 30+ characters.

    learning_curves.png     the rank metric, loss (test solid, val dashed) and train loss per epoch
    leaderboard.png         the rank metric on test with 95% CI whiskers; tied-with-best marked
    pareto_params.png       the rank metric vs parameter count, Pareto front drawn
    pareto_train_time.png   the rank metric vs training time, Pareto front drawn
    confusion_matrices.png  one confusion matrix per model (reported epoch, seeds summed)
    grad_norms.png          total gradient norm per epoch (mean and max over the epoch's steps)
    calibration.png         classification: reliability diagrams (runner/report/task_plots.py)
    regression.png          regression: predicted vs true, residuals (runner/report/task_plots.py)
    per_class.png           classification, multi-label: per-class F1, models x classes, a grid past 20 classes (runner/report/per_class.py); dense: per-class IoU
    segmentation.png        dense: the first test images, truth and each model's predicted mask (runner/report/dense_plots.py)
    confused_pairs.png      classification past 20 classes: each model's most-confused pairs (runner/report/task_plots.py)
    tuning_curves.png       [report] by = "family": expected best of n trials per family (runner/report/tuning_plot.py)

Legends in their own panel, titles wrapped to the figure, Pareto points named in the legend,
one colour per model name, min-max bands with 2 seeds: docs/reading-results.md (checked by
tests/report/test_plot_layout.py). The Figure API (no pyplot state) keeps plotting headless
and away from a caller's open figures.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless unless the caller already chose a backend
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from compare import atomic  # noqa: E402
from compare.metrics.builtin import TEST_HEADLINE, value_range  # noqa: E402
from compare.report import dense_plots, head_plots, stats, task_plots, tuning_plot  # noqa: E402
from compare.report.confusion_plots import confusion_grid  # noqa: E402
from compare.report.figure_kit import DPI, PALETTE, _figure, family_colours, legend_panel, model_colours, seeds_note, wrap  # noqa: E402,F401 - their home; read here as before
from compare.report.leaderboard import Leaderboard  # noqa: E402
from compare.report.run_data import RunData  # noqa: E402
from compare.rundir import layout  # noqa: E402
from compare.rundir.guard import check_no_links  # noqa: E402

EPOCH_LABEL = "epoch (passes over the train split)"


def figures(run: RunData, board: Leaderboard, by_family=None) -> dict[str, Callable[[], Figure | None]]:
    """Every plot by file name, drawn when called; None where the run has no data for it."""
    order = list(board.table["model"])  # rank order: legends read best first
    family_of = dict(zip(board.table["model"], board.table["family"])) if "family" in board.table else {}
    grouped = len(set(family_of.values())) < len(family_of)  # a sweep or search: its trials share a colour family
    colours = family_colours(family_of) if grouped else model_colours(run.model_names + order)
    history = run.history.replace([np.inf, -np.inf], np.nan)
    n_seeds = len(run.seeds)
    title = run.config.get("experiment", {}).get("name") or run.label
    title = title if title == run.label else f"{title} ({run.label})"  # experiment and run directory
    metric = board.evidence.metric
    scores = {}  # the confusion titles name the rank metric, not accuracy, in a run ranked by another
    if metric != TEST_HEADLINE and f"{metric}_mean" in board.table:
        scores = {m: f"{metric.removeprefix('test_')} {v:.3f}" for m, v in zip(board.table["model"], board.table[f"{metric}_mean"])}
    return {
        layout.LEARNING_CURVES_PNG: lambda: learning_curves(history, order, colours, n_seeds, title, metric, loss_unit(run)),
        layout.LEADERBOARD_PNG: lambda: leaderboard_chart(board, title),
        # trainable parameters where models.csv has them (a frozen backbone costs no training); older runs: all
        layout.PARETO_PARAMS_PNG: lambda: pareto(board, colours, *(("trainable_params", "trainable parameters (count)", "trainable parameter count") if "trainable_params" in board.table else ("params", "parameters (count)", "parameter count")), title),
        layout.PARETO_TRAIN_TIME_PNG: lambda: pareto(board, colours, "train_time_s", "training time per seed (s)", "training time", title),
        layout.CONFUSION_PNG: lambda: confusion_grid(run, order, title, scores),
        layout.GRAD_NORMS_PNG: lambda: grad_norms(history, order, colours, n_seeds, title),
        layout.CALIBRATION_PNG: lambda: task_plots.calibration(run, order, colours, title),
        layout.REGRESSION_PNG: lambda: task_plots.regression(run, order, colours, title),
        layout.PER_CLASS_PNG: lambda: dense_plots.per_class_iou(run, order, title) if run.task[0] == "dense" else task_plots.per_class_f1(run, order, title),
        layout.SEGMENTATION_PNG: lambda: dense_plots.predictions(run, order, title),
        **({layout.CONFUSED_PAIRS_PNG: lambda: task_plots.confused_pairs(run, order, colours, title)} if task_plots.many_classes(run) else {}),
        layout.TUNING_CURVES_PNG: lambda: tuning_plot.tuning_curves(by_family, title) if by_family is not None else None,
        **head_plots.figures(run, order, colours, title),  # several heads: each head's own plots
    }


def write_plots(run: RunData, board: Leaderboard, out_dir: str | Path, notes: list[str] | None = None, by_family=None) -> list[Path]:
    """Every plot this run has data for; returns the files written. A plot that cannot be drawn
    is one line in `notes` (the caller prints them): a plot never fails a finished run."""
    out = check_no_links(Path(out_dir))  # before drawing: a planted link costs no seconds
    out.mkdir(parents=True, exist_ok=True)
    written, other = [], []
    for filename, draw in figures(run, board, by_family).items():
        try:
            fig = draw()
        except Exception as err:  # noqa: BLE001 - one plot's trouble must not cost the others (or the run)
            if notes is not None:
                notes.append(f"{filename} skipped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        if fig is None:  # nothing to draw (e.g. no predictions saved: no confusion matrices)
            if TASK_ONLY.get(filename) == "classification" != run.task[0] != "heads":  # heads: drawn per head  # what a classifier's user expects and this task lacks
                other.append(filename)
            continue
        with atomic.atomic_write(check_no_links(out / filename)) as f:
            fig.savefig(f, format="png", dpi=DPI)  # constrained layout already fits titles and outside legends
        written.append(out / filename)
    if other and notes is not None:
        notes.append(f"not drawn, they fit another task than {run.task[0]}: {', '.join(other)}")
    return written


TASK_ONLY = {layout.CONFUSION_PNG: "classification", layout.CALIBRATION_PNG: "classification", layout.PER_CLASS_PNG: "classification", layout.REGRESSION_PNG: "regression"}


_spread = stats.seed_band  # one home: TensorBoard's bands over seeds use it too (runner/report/tb_views.py)


def _draw(ax, history: pd.DataFrame, column: str, models, colours, log: bool, dashed: bool = False) -> list[tuple]:
    """One line (+ band) per model; returns each line's (epochs, values), for zooming."""
    if column not in history or not history[column].notna().any():
        return []
    per_model: dict[str, list] = {}
    for (model, epoch), values in history[history[column].notna()].groupby(["model", "epoch"])[column]:
        per_model.setdefault(model, []).append((epoch, *_spread(values.to_numpy(float), log, value_range(column))))
    lines = []
    for model in (m for m in models if m in per_model):
        epoch, centre, low, high = map(np.asarray, zip(*sorted(per_model[model])))
        ax.plot(epoch, centre, color=colours[model], linestyle="--" if dashed else "-", marker="o", markersize=3.5, linewidth=1.6)
        if np.isfinite(low).any():
            ax.fill_between(epoch, low, high, color=colours[model], alpha=0.12, linewidth=0)
        lines.append((epoch, centre))
    return lines


def _zoom(ax, lines: list[tuple]) -> None:
    """Accuracy axis: the range the models' mean lines span over the later half of the epochs
    (where they differ), padded, inside [0, 1]; bands may run off it."""
    if not lines:
        return
    last = max(float(epoch.max()) for epoch, _ in lines)
    values = np.concatenate([centre[epoch >= np.ceil(last / 2)] for epoch, centre in lines])
    values = values[np.isfinite(values)]
    if not len(values):
        return
    low, high = float(values.min()), float(values.max())
    pad = max(0.02, 0.15 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))


def _curves(history: pd.DataFrame, panels, order, colours, n_seeds: int, title: str, heading: str) -> Figure:
    """One panel per (title, [(column, dashed)], y label, log); a model legend, plus the line
    styles where a panel draws val dashed."""
    models = [m for m in order if m in set(history["model"])]
    handles = [Line2D([], [], color=colours[m], label=m, marker="o", markersize=4) for m in models]
    if any(dashed and c in history and history[c].notna().any() for _, columns, _, _ in panels for c, dashed in columns):
        handles += [Line2D([], [], color="#444444", label="test", linestyle="-"), Line2D([], [], color="#444444", label="val", linestyle="--")]
    fig, axes, key = _figure(len(panels), width=4.6, height=4.2, legend=[h.get_label() for h in handles])
    clipped = False
    for ax, (panel_title, columns, ylabel, log) in zip(axes[0], panels):
        present = [c for c, _ in columns if c in history and history[c].notna().any()]
        log = log and bool(present) and all((history[c].dropna() > 0).all() for c in present)
        lines = []
        for column, dashed in columns:
            lines += _draw(ax, history, column, models, colours, log, dashed)
        if log:
            _log_axis(ax, ax.yaxis)
        clipped |= _leave_diverged_off(ax, history, present, log)
        if "acc" in columns[0][0]:
            _zoom(ax, lines)
            ylabel += ", zoomed"
        ax.set_title(wrap(panel_title, 4.4, 10))
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(ylabel + (", log scale" if log else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_panel(key, handles, "model")
    width = fig.get_figwidth()
    heading += "; a diverged model's last epoch runs off the top" if clipped else ""
    fig.suptitle(wrap(f"{title}: {heading}", width - 1) + "\n" + wrap(seeds_note(n_seeds), width - 1, 9), fontsize=11)
    return fig


def _leave_diverged_off(ax, history: pd.DataFrame, present: list[str], log: bool) -> bool:
    """Scale the axis to the epochs that did not diverge: one diverged epoch's loss (1e29) would
    squash every other line against the bottom. True where it clipped."""
    diverged = history["status"] == "diverged" if "status" in history else pd.Series(False, index=history.index)
    steady, wild = (history.loc[rows, present].to_numpy(float).ravel() for rows in (~diverged, diverged))
    steady = steady[np.isfinite(steady) & ((steady > 0) | (not log))]
    if not len(steady) or not (wild[np.isfinite(wild)] > steady.max()).any():
        return False
    low, high = steady.min(), steady.max()
    ax.set_ylim(*((low / 1.3, high * 1.3) if log else (low - 0.1 * (high - low), high + 0.1 * (high - low))))
    return True


def loss_unit(run: RunData) -> str:
    """What one logged loss value averages over: the shared loss's batch mean, weighted by the
    batch's samples, is a mean per sample only where a sample gives one loss term (BCE on 5
    labels averages 5 terms per sample, MSE on 3 outputs 3)."""
    kind, width = run.task
    if kind == "multilabel":
        return "mean per sample and label"
    if kind == "regression" and (width or 1) > 1:
        return "mean per sample and output"
    return "mean per element" if kind == "other" else "mean per sample"


def learning_curves(history, order, colours, n_seeds: int, run_name: str, metric: str = TEST_HEADLINE, unit: str = "mean per sample") -> Figure:
    """The rank metric (accuracy unless the run ranks by another test metric), the losses
    (`unit`: what a loss value averages over, loss_unit)."""
    if not metric.startswith("test_") or metric == "test_loss" or metric not in history or not history[metric].notna().any():
        metric = TEST_HEADLINE
    name = metric.removeprefix("test_")
    val = [c for c in (f"val_{name}", "val_loss") if c in history and history[c].notna().any()]
    splits = "test solid, val dashed" if val else "test"
    what = ("accuracy", "accuracy (fraction correct)") if name == "acc" else (name, name)
    panels = [
        (f"{what[0]} per epoch ({splits})", [(metric, False), (f"val_{name}", True)], what[1], False),
        (f"loss per epoch ({splits})", [("test_loss", False), ("val_loss", True)], f"loss ({unit})", True),
        ("train loss per epoch", [("train_loss", False)], f"train loss ({unit})", True),
    ]
    return _curves(history, panels, order, colours, n_seeds, run_name, "learning curves (mean over seeds; geometric on log axes)")


def grad_norms(history, order, colours, n_seeds: int, run_name: str) -> Figure | None:
    if "grad_norm_mean" not in history:
        return None
    heading = "gradient norms (total L2 norm; geometric mean over seeds)"
    if "grad_nonfinite" in history and history["grad_nonfinite"].fillna(0).sum() > 0:
        bad = history[history["grad_nonfinite"] > 0].groupby("model")["grad_nonfinite"].sum()
        heading += "; steps with a non-finite gradient (left out of the norms): " + ", ".join(f"{m} {int(n)}" for m, n in bad.items())
    panels = [
        ("mean over the epoch's steps", [("grad_norm_mean", False)], "total gradient L2 norm", True),
        ("max over the epoch's steps", [("grad_norm_max", False)], "total gradient L2 norm", True),
    ]
    return _curves(history, panels, order, colours, n_seeds, run_name, heading)


def _ci_errors(table: pd.DataFrame, metric: str = TEST_HEADLINE) -> np.ndarray:
    mean = table[f"{metric}_mean"].to_numpy(float)
    low = np.where(np.isfinite(table[f"{metric}_ci95_low"].to_numpy(float)), table[f"{metric}_ci95_low"], mean)
    high = np.where(np.isfinite(table[f"{metric}_ci95_high"].to_numpy(float)), table[f"{metric}_ci95_high"], mean)
    return np.vstack([mean - low, high - mean])


def _metric_words(board: Leaderboard) -> tuple[str, str]:
    """(column prefix, axis words) of the rank metric."""
    metric = board.evidence.metric
    if metric == TEST_HEADLINE:
        return metric, "test accuracy"
    return metric, f"{metric.removeprefix('test_')} on test ({'higher' if board.evidence.higher_is_better else 'lower'} is better)"


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
    verdicts = _verdicts(table)
    fig, ((ax,),), key = _figure(1, width=6.5 + 0.075 * max(map(len, table["model"])), height=1.6 + 0.45 * len(table),
                                 legend=[GROUPS[v][0] for v in verdicts])
    y = np.arange(len(table))
    metric, words = _metric_words(board)
    errors = _ci_errors(table, metric)
    handles = []
    for group, (label, colour, marker) in GROUPS.items():
        idx = [i for i, v in enumerate(verdicts) if v == group]
        if idx:
            handles.append(ax.errorbar(table[f"{metric}_mean"].to_numpy(float)[idx], y[idx], xerr=errors[:, idx], fmt=marker,
                                       color=colour, markersize=11 if marker == "*" else 8, capsize=4, label=label))
    for yi, m, mde in zip(y, table[f"{metric}_mean"], table.get("mde_vs_best", pd.Series(np.nan, index=table.index))):
        if np.isfinite(m):  # with the smallest difference from the best this evidence resolves
            ax.annotate(f"{m:.4f}" + (f" (MDE {mde:.3f})" if np.isfinite(mde) else ""), (m, yi), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_yticks(y, [f"{r}. {m}" for r, m in zip(table["rank"], table["model"])])
    ax.set_ylim(len(table) - 0.5, -0.9)  # best on top, room for its value label under the title
    n_test = board.evidence.test_samples
    if metric == TEST_HEADLINE:
        ax.set_xlabel(f"test accuracy at the selected epoch (fraction of {n_test:,} test samples)" if n_test else "test accuracy at the selected epoch (fraction correct)")
    else:
        ax.set_xlabel(f"{words} at the selected epoch" + (f", {n_test:,} test samples" if n_test else ""))
    legend_panel(key, handles, "verdict")
    seeds = len(board.evidence.seeds)
    how = f"mean over {seeds} seeds, whiskers = 95% t-interval" if seeds > 1 else "one seed, whiskers = 95% " + board.evidence.interval.split(" 95%")[0]
    note = f"\n{seeds_note(seeds, band=False)}" if 1 < seeds < 3 else ""
    fig.suptitle(wrap(f"{run_name}: leaderboard ({how})", fig.get_figwidth() - 0.5) + wrap(note, fig.get_figwidth() - 0.5, 9), fontsize=11)
    return fig


def _log_axis(ax, axis) -> None:
    """A log axis labelled in plain numbers at 1, 2, 5 x 10^k (minor labels such as 3×10¹ 4×10¹
    collide)."""
    (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _cost_axis(ax, x: np.ndarray, label: str) -> None:
    """Log scale where the costs span a decade or more; a linear axis with at most 6 ticks otherwise."""
    finite = x[np.isfinite(x)]
    if len(finite) and (finite > 0).all() and finite.max() >= 10 * finite.min():
        _log_axis(ax, ax.xaxis)
        label += ", log scale"
    else:
        ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.set_xlabel(label)


def pareto(board: Leaderboard, colours: dict, cost: str, xlabel: str, what: str, run_name: str) -> Figure | None:
    """Points in the models' colours, named in the legend (labels next to points collide when
    models are close); the front's points are ringed and joined by a step line."""
    table = board.table
    if cost not in table or not np.isfinite(table[cost].to_numpy(float)).any():
        return None
    metric, words = _metric_words(board)
    values = table[f"{metric}_mean"].to_numpy(float)
    if not np.isfinite(values).any():
        return None
    front = stats.pareto_front(table[cost].to_numpy(float), values if board.evidence.higher_is_better else -values)
    models = list(table["model"])
    handles = [Line2D([], [], color=colours[m], marker="o", linestyle="", markeredgecolor="black" if f else "none",
                      label=f"{r}. {m}" + (" (front)" if f else "")) for r, m, f in zip(table["rank"], models, front)]
    handles.append(Line2D([], [], color="black", linewidth=1.2, label="Pareto front"))
    fig, ((ax,),), key = _figure(1, width=6.5, height=5, legend=[h.get_label() for h in handles])
    x, acc = table[cost].to_numpy(float), values
    ax.errorbar(x, acc, yerr=_ci_errors(table, metric), fmt="none", ecolor="#bbbbbb", capsize=3, zorder=1)
    ax.scatter(x, acc, s=[80 if f else 45 for f in front], c=[colours[m] for m in models],
               edgecolors=["black" if f else "none" for f in front], linewidths=1.5, zorder=3)
    order = np.argsort(x[front])
    ax.step(x[front][order], acc[front][order], where="post", color="black", linewidth=1.2, zorder=2)
    _cost_axis(ax, x, xlabel)
    ax.margins(x=0.08)
    ax.set_ylabel("test accuracy at the selected epoch (fraction correct)" if metric == TEST_HEADLINE else words)
    legend_panel(key, handles, "model (rank)")
    width = fig.get_figwidth() - 0.5
    name = "accuracy" if metric == TEST_HEADLINE else metric.removeprefix("test_")
    fig.suptitle(wrap(f"{run_name}: {name} vs {what}", width) + "\n"
                 + wrap(f"front: no other model is both cheaper and better on {name}; bars = 95% CI", width, 9), fontsize=11)
    return fig

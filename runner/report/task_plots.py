"""Plots that fit one task only: reliability diagrams for classification, predicted vs true
for regression. Each reads the test statistics kept at the selected epoch (one seed: the
first) and returns None where the run's task or files do not fit (runner/report/plots.py
writes the others)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from runner.metrics.builtin import ECE_BINS, Kept, metrics_for
from runner.report.figure_kit import _figure, wrap
from runner.report.run_data import RunData, epoch_stats


def _selected(run: RunData, model: str, stat: str) -> Kept | None:
    """The first seed's kept test statistics at the epoch the leaderboard reports."""
    seeds = run.predictions.get(model, {})
    if not seeds:
        return None
    seed = min(seeds)
    pred = seeds[seed]
    stats = epoch_stats(pred, run.reported_key(pred))
    return Kept(stats, pred["target"], run.task[1]) if stat in stats else None


def _grid(n: int, side: float = 3.2) -> tuple[Figure, np.ndarray]:
    ncols = min(4, n)
    fig, axes, _ = _figure(ncols, width=side, height=side + 0.3, nrows=-(-n // ncols))
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def calibration(run: RunData, order: list[str], colours: dict, run_name: str) -> Figure | None:
    """Reliability diagram per model: accuracy against mean confidence in ECE's bins."""
    if run.task[0] != "classification":
        return None
    kept = {m: k for m in order if (k := _selected(run, m, "p_max")) is not None and "top1" in k.stats}
    if not kept:
        return None
    fig, axes = _grid(len(kept))
    ece = metrics_for("classification")["ece"]
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for ax, (model, k) in zip(axes.flat, kept.items()):
        conf = k.stats["p_max"].astype(float)
        correct = (k.stats["top1"] == k.target).astype(float)
        b = np.clip(np.ceil(conf * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
        counts = np.bincount(b, minlength=ECE_BINS)
        acc = np.bincount(b, weights=correct, minlength=ECE_BINS) / np.maximum(counts, 1)
        ax.bar(edges[:-1], np.where(counts > 0, acc, 0), width=1 / ECE_BINS, align="edge", color=colours[model], edgecolor="black", linewidth=0.5)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(f"{model}\nECE {ece.value(k):.3f}", fontsize=9)
    fig.suptitle(wrap(f"{run_name}: reliability diagrams (test, {ECE_BINS} equal-width bins; on the diagonal = calibrated)", fig.get_figwidth() - 0.5), fontsize=11)
    return fig


def regression(run: RunData, order: list[str], colours: dict, run_name: str) -> Figure | None:
    """Per model: predicted against true (first output), and the residuals against the prediction."""
    if run.task[0] != "regression":
        return None
    kept = {m: k for m in order if (k := _selected(run, m, "pred")) is not None}
    if not kept:
        return None
    fig, axes, _ = _figure(len(kept), width=3.2, height=3.4, nrows=2)
    rmse = metrics_for("regression")["rmse"]
    for i, (model, k) in enumerate(kept.items()):
        y, p = k.target.reshape(len(k), -1)[:, 0].astype(float), k.stats["pred"].reshape(len(k), -1)[:, 0].astype(float)
        top, bottom = axes[0, i], axes[1, i]
        top.scatter(y, p, s=8, alpha=0.6, color=colours[model])
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        top.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        top.set_xlabel("true")
        top.set_ylabel("predicted")
        top.set_title(f"{model}\nRMSE {rmse.value(k):.4g}", fontsize=9)
        bottom.scatter(p, p - y, s=8, alpha=0.6, color=colours[model])
        bottom.axhline(0, color="grey", linestyle="--", linewidth=1)
        bottom.set_xlabel("predicted")
        bottom.set_ylabel("residual (predicted - true)")
    fig.suptitle(wrap(f"{run_name}: regression on test (first output; diagonal / zero line = perfect)", fig.get_figwidth() - 0.5), fontsize=11)
    return fig


def per_class_f1(run: RunData, order: list[str], run_name: str) -> Figure | None:
    """Models x classes heatmap of F1 (runner/report/per_class.py), worst classes visible at a glance."""
    from runner.report.per_class import per_class  # noqa: PLC0415 - pandas tables, only for this plot

    table = per_class(run, order)
    if table.empty or "f1" not in table:  # regression: its per-output table has no F1
        return None
    grid = table.pivot(index="model", columns="class", values="f1").reindex(index=[m for m in order if m in set(table["model"])], columns=list(dict.fromkeys(table["class"])))
    import seaborn as sns  # noqa: PLC0415

    width = min(2.5 + 0.45 * grid.shape[1], 30)
    fig, axes, _ = _figure(1, width=width, height=1.4 + 0.4 * grid.shape[0], style="white")
    ax = axes[0, 0]
    sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=grid.shape[1] <= 20, fmt=".2f", annot_kws={"fontsize": 7}, cbar_kws={"label": "F1"})
    ax.set_xlabel("class")
    ax.set_ylabel("")
    fig.suptitle(wrap(f"{run_name}: per-class F1 on test (the reported epoch, seeds summed)", width - 0.5), fontsize=11)
    return fig

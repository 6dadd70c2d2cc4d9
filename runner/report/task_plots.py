"""Plots that fit one task only: reliability diagrams for classification, predicted vs true
for regression, per-class F1 and, past 20 classes, the most-confused pairs. Each reads the test
statistics kept at the selected epoch (reliability and regression: the first seed) and returns
None where the run's task or files do not fit (runner/report/plots.py writes the others)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from compare.metrics.builtin import ECE_BINS, Kept, metrics_for
from compare.report.figure_kit import _figure, wrap
from compare.report.run_data import RunData, epoch_stats

FEW_IN_BIN = 10  # a reliability bin with fewer test samples is drawn faint: its accuracy is noise
MANY_CLASSES = 20  # past this a confusion matrix has no labels or numbers: confused_pairs.png says what it hides
CLASSES_PER_ROW = 20  # per_class.png: classes per heatmap row, so 100 classes make a grid, not a 3600-px strip


def _selected(run: RunData, model: str, stat: str) -> tuple[Kept, int, int] | None:
    """(the first seed's kept test statistics at the epoch the leaderboard reports, that epoch,
    that seed)."""
    seeds = run.predictions.get(model, {})
    if not seeds:
        return None
    seed = min(seeds)
    pred = seeds[seed]
    key = run.reported_key(pred)
    stats = epoch_stats(pred, key)
    return (Kept(stats, pred["target"], run.task[1]), int(pred.get(f"{key}_epoch", 0)), seed) if stat in stats else None


def _grid(n: int, side: float = 3.2, ncols: int = 4, height: float | None = None) -> tuple[Figure, np.ndarray]:
    ncols = min(ncols, n)
    fig, axes, _ = _figure(ncols, width=side, height=height or side + 0.3, nrows=-(-n // ncols))
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def _which(run: RunData, seeds: set[int]) -> str:
    """Which test predictions a one-seed plot shows, in words."""
    epoch = "each model's best epoch on val" if run.config.get("report", {}).get("select") == "best_val" else "the final epoch"
    seed = f"seed {min(seeds)} of {len(run.seeds)}" if len(run.seeds) > 1 else f"seed {min(seeds)}"
    return f"test, {epoch}, {seed}"


def calibration(run: RunData, order: list[str], colours: dict, run_name: str) -> Figure | None:
    """Reliability diagram per model: accuracy against mean confidence in ECE's bins, each bar
    labelled with its test samples (a bin of three reads faint, not like a full one)."""
    if run.task[0] != "classification":
        return None
    kept = {m: s for m in order if (s := _selected(run, m, "p_max")) is not None and "top1" in s[0].stats}
    if not kept:
        return None
    fig, axes = _grid(len(kept))
    ece = metrics_for("classification")["ece"]
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for ax, (model, (k, epoch, _)) in zip(axes.flat, kept.items()):
        conf = k.stats["p_max"].astype(float)
        correct = (k.stats["top1"] == k.target).astype(float)
        b = np.clip(np.ceil(conf * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
        counts = np.bincount(b, minlength=ECE_BINS)
        acc = np.bincount(b, weights=correct, minlength=ECE_BINS) / np.maximum(counts, 1)
        few = counts < FEW_IN_BIN
        for faint in (False, True):
            idx = np.flatnonzero((counts > 0) & (few == faint))
            ax.bar(edges[idx], acc[idx], width=1 / ECE_BINS, align="edge", color=colours[model], edgecolor="black", linewidth=0.5,
                   alpha=0.3 if faint else 1.0, hatch="//" if faint else None)
        for i in np.flatnonzero(counts):  # the count at the foot of the bar: where no bar top can hide it
            ax.text(edges[i] + 0.5 / ECE_BINS, 0.015, f"{counts[i]:,}", rotation=90, ha="center", va="bottom", fontsize=6,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(f"{model}\nECE {ece.value(k):.3f}, epoch {epoch}, {len(k):,} samples", fontsize=9)
    seeds = {s for _, _, s in kept.values()}
    fig.suptitle(wrap(f"{run_name}: reliability diagrams ({_which(run, seeds)}; {ECE_BINS} equal-width bins; on the diagonal = calibrated)", fig.get_figwidth() - 0.5)
                 + "\n" + wrap(f"number at a bar's foot = test samples in the bin; faint, hatched = under {FEW_IN_BIN}", fig.get_figwidth() - 0.5, 9), fontsize=11)
    return fig


def regression(run: RunData, order: list[str], colours: dict, run_name: str) -> Figure | None:
    """Per model: predicted against true (first output) above the residuals against the
    prediction; at most 4 models a row, every panel of a kind on the same axes."""
    if run.task[0] != "regression":
        return None
    kept = {m: s for m in order if (s := _selected(run, m, "pred")) is not None}
    if not kept:
        return None
    ncols = min(4, len(kept))
    fig, axes, _ = _figure(ncols, width=3.2, height=3.1, nrows=2 * -(-len(kept) // ncols))
    rmse = metrics_for("regression")["rmse"]
    first = {m: (k.target.reshape(len(k), -1)[:, 0].astype(float), k.stats["pred"].reshape(len(k), -1)[:, 0].astype(float)) for m, (k, _, _) in kept.items()}
    values = np.concatenate([np.r_[y, p] for y, p in first.values()])
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = 0.04 * (high - low or 1.0)
    errors = np.concatenate([p - y for y, p in first.values()])
    worst = float(np.nanmax(np.abs(errors[np.isfinite(errors)]), initial=0.0)) * 1.08 or 1.0
    for i, (model, (k, epoch, _)) in enumerate(kept.items()):
        y, p = first[model]
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        top.scatter(y, p, s=8, alpha=0.6, color=colours[model])
        top.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        top.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), xlabel="true", ylabel="predicted")
        top.set_title(f"{model}\nRMSE {rmse.value(k):.4g}, epoch {epoch}", fontsize=9)
        bottom.scatter(p, p - y, s=8, alpha=0.6, color=colours[model])
        bottom.axhline(0, color="grey", linestyle="--", linewidth=1)
        bottom.set(xlim=(low - pad, high + pad), ylim=(-worst, worst), xlabel="predicted", ylabel="residual (predicted - true)")
    for i in range(len(kept), axes.shape[0] // 2 * ncols):
        axes[2 * (i // ncols), i % ncols].set_axis_off()
        axes[2 * (i // ncols) + 1, i % ncols].set_axis_off()
    seeds = {s for _, _, s in kept.values()}
    fig.suptitle(wrap(f"{run_name}: regression ({_which(run, seeds)}; first output; diagonal / zero line = perfect; all models on the same axes)", fig.get_figwidth() - 0.5), fontsize=11)
    return fig


def per_class_f1(run: RunData, order: list[str], run_name: str) -> Figure | None:
    """Models x classes heatmap of F1 (runner/report/per_class.py), worst classes visible at a
    glance; past CLASSES_PER_ROW classes the classes wrap onto more rows, a grid."""
    from compare.report.per_class import per_class  # noqa: PLC0415 - pandas tables, only for this plot

    table = per_class(run, order)
    if table.empty or "f1" not in table:  # regression: its per-output table has no F1
        return None
    what = "class" if "class" in table else "label"
    grid = table.pivot(index="model", columns=what, values="f1").reindex(index=[m for m in order if m in set(table["model"])], columns=list(dict.fromkeys(table[what])))
    import seaborn as sns  # noqa: PLC0415

    k, n = grid.shape[1], grid.shape[0]
    per_row = max(CLASSES_PER_ROW, -(-k // 12))  # at most 12 rows: 1,000 classes stay a page
    rows = -(-k // per_row)
    width = max(6.5, 2.5 + min(0.45 * min(k, per_row), 14) + 0.07 * max(map(len, grid.index)))  # cells narrow past 30 a row
    fig, axes, _ = _figure(1, width=width, height=0.9 + 0.35 * n if rows > 1 else 1.6 + 0.4 * n, nrows=rows, style="white")
    values, names = grid.to_numpy(float), [str(c) for c in grid.columns]
    for r, ax in enumerate(axes[:, 0]):
        block = np.full((n, per_row if rows > 1 else k), np.nan)  # the last row padded: cells line up in columns
        part = values[:, r * per_row:(r + 1) * per_row]
        block[:, :part.shape[1]] = part
        labels = names[r * per_row:(r + 1) * per_row] + [""] * (block.shape[1] - part.shape[1])
        step = 1 if per_row <= 40 else 10
        sns.heatmap(block, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=block.shape[1] <= CLASSES_PER_ROW and n <= 12, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=False, xticklabels=labels if step == 1 else False, yticklabels=list(grid.index))
        if step > 1:
            ax.set_xticks(np.arange(0, block.shape[1], step) + 0.5, labels[::step])
        ax.tick_params(axis="x", labelrotation=90 if max(map(len, labels)) > 3 else 0, labelsize=8)
        ax.tick_params(axis="y", labelrotation=0, labelsize=8)
        ax.set_ylabel("")
        ax.set_xlabel(what if r == rows - 1 else "")
    fig.colorbar(axes[0, 0].collections[0], ax=axes[:, 0], shrink=min(1.0, 3 / rows + 0.2), label="F1")
    rule = "" if what == "class" else "; a score >= 0.5 predicts the label"
    fig.suptitle(wrap(f"{run_name}: per-{what} F1 on test (the reported epoch, seeds summed{rule})", width - 0.5), fontsize=11)
    return fig


def many_classes(run: RunData) -> bool:
    """Classification past MANY_CLASSES classes: the run gets confused_pairs.png."""
    return run.task[0] == "classification" and (run.task[1] or len(run.classes)) > MANY_CLASSES


def confused_pairs(run: RunData, order: list[str], colours: dict, run_name: str) -> Figure | None:
    """Past MANY_CLASSES classes: each model's most frequent mistakes (true -> predicted) as
    bars, the share of the true class's test samples, each labelled with its count."""
    from compare.report.per_class import confused_pairs as pairs_table  # noqa: PLC0415

    if not many_classes(run):
        return None
    pairs = pairs_table(run, order)
    models = [m for m in order if m in set(pairs["model"])]
    if not models:
        return None
    top = int(pairs.groupby("model").size().max())
    fig, axes = _grid(len(models), side=3.6, ncols=3, height=1.2 + 0.28 * top)
    for ax, model in zip(axes.flat, models):
        rows = pairs[pairs["model"] == model]
        y = np.arange(len(rows))
        ax.barh(y, rows["share"], color=colours[model], edgecolor="black", linewidth=0.5)
        for yi, share, count in zip(y, rows["share"], rows["count"]):
            ax.text(min(share, 0.72) + 0.02, yi, f"{count:g}", va="center", fontsize=7)
        ax.set_yticks(y, [f"{t} → {p}" for t, p in zip(rows["true"], rows["predicted"])], fontsize=8)
        ax.set_ylim(top - 0.5, -0.5)  # the most frequent on top; every panel the same rows
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the true class's test samples")
        ax.set_title(wrap(model, 3.4, 9), fontsize=9)
    fig.suptitle(wrap(f"{run_name}: most-confused pairs (test, the reported epoch, seeds summed; true → predicted)", fig.get_figwidth() - 0.5)
                 + "\n" + wrap("number = test samples per seed; the table: compare leaderboard RUN --per-class", fig.get_figwidth() - 0.5, 9), fontsize=11)
    return fig

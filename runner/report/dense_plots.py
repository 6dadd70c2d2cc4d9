"""Plots of a dense task (segmentation): plots/segmentation.png, the first test images' input,
truth and each model's predicted mask side by side (what a segmentation user looks at first),
and plots/per_class.png, per-class IoU, models x classes. Both read the test statistics kept at
the reported epoch (the masks: the first seed's; runner/metrics/dense.py keeps them)."""
from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from compare.report.figure_kit import _figure, wrap
from compare.report.run_data import RunData, epoch_stats

IGNORED = (0.55, 0.55, 0.55)  # a pixel no statistic counts (ignore_index), grey in the truth


def _palette(k: int) -> ListedColormap:
    import seaborn as sns  # noqa: PLC0415 - the plotting stack, only when drawn

    colours = sns.color_palette("tab10" if k <= 10 else "tab20" if k <= 20 else "husl", k)
    return ListedColormap(colours).with_extremes(bad=IGNORED)


def _shown(run: RunData, model: str) -> tuple[dict, np.ndarray] | None:
    seeds = run.predictions.get(model, {})
    if not seeds:
        return None
    pred = seeds[min(seeds)]
    stats = epoch_stats(pred, run.reported_key(pred))
    return (stats, pred["target"]) if "shown_mask" in stats else None


def predictions(run: RunData, order: list[str], run_name: str) -> Figure | None:
    """Rows: the first test images; columns: input (where it is an image), truth, each model's
    prediction at the reported epoch (first seed); one colour per class, ignored pixels grey."""
    if run.task[0] != "dense":
        return None
    kept = {m: s for m in order if (s := _shown(run, m)) is not None}
    if not kept:
        return None
    stats, target = next(iter(kept.values()))
    k = run.task[1] or int(max(s["shown_mask"].max() for s, _ in kept.values())) + 1
    rows = min(len(stats["shown_mask"]), len(target))
    truth = target[:rows]
    if truth.ndim == 2:  # token labels [L]: one row of cells each
        truth = truth[:, None, :]
    image = stats.get("shown_input")
    columns = (["input"] if image is not None else []) + ["truth"] + list(kept)
    names = run.classes if len(run.classes) == k else [str(c) for c in range(k)]
    side = 2.0
    fig, axes, key = _figure(len(columns), width=side, height=side * (truth.shape[1] / truth.shape[2]) + 0.35, nrows=rows, style="white", legend=names[:20] + ["ignored"])
    cmap = _palette(k)
    for r in range(rows):
        panels = []
        if image is not None:
            panels.append(("input", _as_rgb(image[r])))
        panels.append(("truth", np.ma.masked_outside(truth[r], 0, k - 1)))
        for m, (s, _) in kept.items():
            mask = s["shown_mask"][r]
            panels.append((m, mask[None, :] if mask.ndim == 1 else mask))
        for c, (title, data) in enumerate(panels):
            ax = axes[r, c]
            if title == "input":
                ax.imshow(data, interpolation="nearest")
            else:
                ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(f"test image {r}", fontsize=8)
    handles = [Patch(color=cmap(i), label=names[i]) for i in range(min(k, 20))] + [Patch(color=IGNORED, label="ignored")]
    key.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 1), borderaxespad=0, title="class", frameon=False, fontsize=8, title_fontsize=9)
    fig.suptitle(wrap(f"{run_name}: the first {rows} test images, truth and each model's prediction (reported epoch, first seed)", fig.get_figwidth() - 0.5), fontsize=11)
    return fig


def _as_rgb(x: np.ndarray) -> np.ndarray:
    """A [C, H, W] input (C = 1 or 3) as an [H, W, 3] picture, each image's range stretched to [0, 1]."""
    x = x.astype(np.float32)
    x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    low, high = float(x.min()), float(x.max())
    return np.moveaxis((x - low) / (high - low) if high > low else np.zeros_like(x), 0, -1)


def per_class_iou(run: RunData, order: list[str], run_name: str) -> Figure | None:
    """Models x classes heatmap of IoU over the test pixels (runner/report/per_class.py), the
    worst classes visible at a glance."""
    if run.task[0] != "dense":
        return None
    from compare.report.per_class import per_class_dense  # noqa: PLC0415 - pandas tables, only for this plot

    table = per_class_dense(run, order)
    if table.empty:
        return None
    grid = table.pivot(index="model", columns="class", values="iou").reindex(index=[m for m in order if m in set(table["model"])], columns=list(dict.fromkeys(table["class"])))
    import seaborn as sns  # noqa: PLC0415

    k, n = grid.shape[1], grid.shape[0]
    width = max(6.5, 2.5 + min(0.5 * k, 16) + 0.07 * max(map(len, grid.index)))
    fig, axes, _ = _figure(1, width=width, height=1.6 + 0.4 * n, style="white")
    sns.heatmap(grid.to_numpy(float), ax=axes[0, 0], vmin=0, vmax=1, cmap="viridis", annot=k <= 20 and n <= 12, fmt=".2f", annot_kws={"fontsize": 7},
                xticklabels=[str(c) for c in grid.columns], yticklabels=list(grid.index), cbar_kws={"label": "IoU"})
    axes[0, 0].tick_params(axis="x", labelrotation=90 if max(len(str(c)) for c in grid.columns) > 3 else 0, labelsize=8)
    axes[0, 0].tick_params(axis="y", labelrotation=0, labelsize=8)
    axes[0, 0].set_xlabel("class")
    fig.suptitle(wrap(f"{run_name}: per-class IoU on test (the reported epoch, seeds summed; blank: the class is in neither truth nor prediction)", width - 0.5), fontsize=11)
    return fig

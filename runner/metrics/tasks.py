"""Which task the data and the loss pose, and what evaluation keeps per sample for it.

The task is inferred once, before training, from one target of the dataset, the shape of one
sample's prediction and the loss (docs/metrics.md, "Tasks"):
- integer targets and a `[C]` prediction per sample: classification (binary when C = 2);
- 0/1 float targets shaped like the prediction, with a BCE-type loss (or a loss of the user's
  own, which then takes logits): multi-label;
- float targets shaped like the prediction: regression;
- integer targets `[H, W]` (or `[L]`) against a `[C, H, W]` (`[C, L]`) prediction: dense
  classification (segmentation, token labels; runner/metrics/dense.py), with the loss's
  `ignore_index` left out of every count;
- anything else: "other" (the loss is the only metric).

Evaluation keeps each sample's statistics on the device (no host sync per batch) and the
run saves them with the predictions. Classification keeps top-1 and top-k indices and three
probabilities, not all C of them, so its cost per sample does not grow with C.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compare.errors import DataError
from compare.metrics import dense, heads

BCE_LOSSES = {"BCEWithLogitsLoss": True, "MultiLabelSoftMarginLoss": True, "BCELoss": False}  # name -> takes logits
REGRESSION_LOSSES = {"MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "GaussianNLLLoss", "PoissonNLLLoss"}
TOP_K = 5  # classification keeps the top-5 classes of every sample (top{k}_acc for k <= 5)


@dataclass(frozen=True)
class Task:
    kind: str  # classification | multilabel | regression | dense | heads | other
    width: int | None = None  # classes, labels or regression outputs
    extent: tuple[int, ...] = ()  # dense: one target's shape (H, W) or (L,)
    ignore_index: int | None = None  # dense: the target value no statistic counts (the loss's ignore_index)
    logits: bool = True  # multi-label: the prediction is logits (sigmoid gives the score), else probabilities
    top_k: int = TOP_K  # classification: how many top classes are kept
    heads: tuple = ()  # kind "heads": (name, Task) per head, width (name, kind, width, loss kept) per head (runner/metrics/heads.py)

    @property
    def binary(self) -> bool:
        return self.kind == "classification" and self.width == 2

    def describe(self) -> str:
        if self.kind == "classification":
            return f"{'binary' if self.binary else f'{self.width}-class'} classification"
        if self.kind == "multilabel":
            return f"multi-label classification ({self.width} labels)"
        if self.kind == "regression":
            return f"regression ({self.width} output{'s' if self.width != 1 else ''})"
        if self.kind == "dense":
            what = "segmentation" if len(self.extent) >= 2 else "token labels"
            ignored = f", ignore_index {self.ignore_index}" if self.ignore_index is not None and self.ignore_index >= 0 else ""
            return f"dense classification ({what}, {self.width} classes, {'x'.join(map(str, self.extent))}{ignored})"
        if self.kind == "heads":
            return f"{len(self.heads)} heads: " + "; ".join(f"{n}: {t.describe()}" for n, t in self.heads)
        return "other (no metric but the loss)"

    def bytes_per_sample(self) -> int:
        """What the kept statistics cost on disk and in memory, per sample and split."""
        if self.kind == "heads":  # each head's statistics and targets (an int64 label, float values, a dense placeholder), and the placeholder
            return 1 + sum(t.bytes_per_sample() + (8 if t.kind == "classification" else 4 * (t.width or 1) if t.kind in ("multilabel", "regression") else 1) for _, t in self.heads)
        if self.kind == "classification":
            index = 2 if self.width <= 2**15 else 4
            k = min(self.top_k, self.width)
            return index * (1 + k) + 4 * (3 + self.binary)
        if self.kind in ("multilabel", "regression"):
            return 4 * self.width
        if self.kind == "dense":
            return 4 * len(dense.STATS) * self.width
        return 0


def loss_name(loss_fn) -> str:
    return type(loss_fn).__name__


def infer_task(target, prediction_shape: tuple[int, ...], loss_fn, all_targets: torch.Tensor | None = None) -> Task:
    """The task of one dataset target (as the dataset returns it) against one sample's
    prediction shape. `all_targets` (where the dataset exposes them) tells 0/1 labels apart."""
    t = torch.as_tensor(target)
    shape = tuple(prediction_shape)
    if not t.is_floating_point() and t.ndim == 0 and len(shape) == 1:
        return Task("classification", shape[0])
    if not t.is_floating_point() and t.ndim >= 1 and shape[1:] == tuple(t.shape) and len(shape) >= 2:
        ignore = getattr(loss_fn, "ignore_index", None)  # CrossEntropyLoss(ignore_index=255); its default -100 matches no label
        return Task("dense", shape[0], extent=tuple(t.shape), ignore_index=ignore if isinstance(ignore, int) else None)
    if t.is_floating_point():
        if tuple(t.shape) != shape:
            if t.ndim == 0 and shape == (1,):
                raise DataError(
                    f"each sample's prediction has shape {shape} but its target has shape (): {loss_name(loss_fn)} would broadcast "
                    "[B, 1] against [B] to [B, B] and give wrong losses; return the output with .squeeze(-1), or give targets of shape (1,)"
                )
            if loss_name(loss_fn) in REGRESSION_LOSSES | set(BCE_LOSSES):  # torch only warns, then broadcasts
                raise DataError(f"each sample's prediction has shape {shape} but its target has shape {tuple(t.shape)}: {loss_name(loss_fn)} needs equal shapes")
            return Task("other")
        width = int(torch.tensor(shape).prod()) if shape else 1
        name = loss_name(loss_fn)
        zero_one = all_targets is None or bool(((all_targets == 0) | (all_targets == 1)).all())
        if name in BCE_LOSSES and zero_one:
            return Task("multilabel", width, logits=BCE_LOSSES[name])
        if name not in REGRESSION_LOSSES and zero_one and all_targets is not None and callable(loss_fn):
            return Task("multilabel", width)  # a loss of the user's own on 0/1 labels: logits, as BCEWithLogitsLoss takes
        return Task("regression", width)
    return Task("other")


def infer_heads(target, shape, loss_fn) -> Task:
    """Several heads (runner/metrics/heads.py): each head's task, inferred as one target's; a
    model returning one tensor for them: "other"."""
    parts = heads.parts(target, shape, loss_fn, infer_task)
    if parts is None:
        return Task("other")
    kept = set(dict(getattr(loss_fn, "parts", {})))  # a loss per head: each head's loss per sample is kept too
    return Task("heads", tuple((n, t.kind, t.width, n in kept) for n, t in parts), heads=tuple(parts))


def sample_stats(task: Task, pred: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's per-sample statistics, on the prediction's device (no host sync)."""
    if task.kind == "heads":  # `pred` and `y`: the output and targets as they are; each head's own statistics
        return heads.sample_stats(task, pred, y, sample_stats)
    if task.kind == "classification":
        pred = pred.detach().float()
        p = torch.softmax(pred, dim=1)
        index = torch.int16 if task.width <= 2**15 else torch.int32
        out = {
            "top1": pred.argmax(dim=1).to(index),
            "top": pred.topk(min(task.top_k, task.width), dim=1).indices.to(index),
            "p_true": p.gather(1, y.long().unsqueeze(1)).squeeze(1),
            "p_max": p.max(dim=1).values,
            "p_sq": (p * p).sum(dim=1),
        }
        if task.binary:
            out["p_pos"] = p[:, 1]
        return out
    if task.kind == "multilabel":
        score = torch.sigmoid(pred.detach().float()) if task.logits else pred.detach().float()
        return {"score": score.reshape(len(y), -1)}
    if task.kind == "regression":
        return {"pred": pred.detach().float().reshape(len(y), -1)}
    if task.kind == "dense":
        return dense.dense_stats(pred, y, task.width, task.ignore_index)
    return {}


def shown(task: Task, pred: torch.Tensor, x=None) -> dict[str, torch.Tensor]:
    """What evaluation keeps of its first batch beyond per-sample statistics: a dense task's
    first few predicted masks (and inputs), for the report's picture; nothing for the others."""
    return dense.shown(pred, x) if task.kind == "dense" else {}

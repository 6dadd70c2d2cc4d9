"""Which task the data and the loss pose, and what evaluation keeps per sample for it.

The task is inferred once, before training, from one target of the dataset, the shape of one
sample's prediction and the loss (docs/metrics.md, "Tasks"):
- integer targets and a `[C]` prediction per sample: classification (binary when C = 2);
- 0/1 float targets shaped like the prediction, with a BCE-type loss (or a loss of the user's
  own, which then takes logits): multi-label;
- float targets shaped like the prediction: regression;
- anything else: "other" (the loss is the only metric).

Evaluation keeps each sample's statistics on the device (no host sync per batch) and the
run saves them with the predictions. Classification keeps top-1 and top-k indices and three
probabilities, not all C of them, so its cost per sample does not grow with C.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from runner.errors import DataError

BCE_LOSSES = {"BCEWithLogitsLoss": True, "MultiLabelSoftMarginLoss": True, "BCELoss": False}  # name -> takes logits
REGRESSION_LOSSES = {"MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "GaussianNLLLoss", "PoissonNLLLoss"}
TOP_K = 5  # classification keeps the top-5 classes of every sample (top{k}_acc for k <= 5)


@dataclass(frozen=True)
class Task:
    kind: str  # classification | multilabel | regression | other
    width: int | None = None  # classes, labels or regression outputs
    logits: bool = True  # multi-label: the prediction is logits (sigmoid gives the score), else probabilities
    top_k: int = TOP_K  # classification: how many top classes are kept

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
        return "other (no metric but the loss)"

    def bytes_per_sample(self) -> int:
        """What the kept statistics cost on disk and in memory, per sample and split."""
        if self.kind == "classification":
            index = 2 if self.width <= 2**15 else 4
            k = min(self.top_k, self.width)
            return index * (1 + k) + 4 * (3 + self.binary)
        if self.kind in ("multilabel", "regression"):
            return 4 * self.width
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


def sample_stats(task: Task, pred: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's per-sample statistics, on the prediction's device (no host sync)."""
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
    return {}

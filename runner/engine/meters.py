"""What evaluation and the step record per batch, kept on the device until an epoch's end:
the summed loss, top-1 classes, the per-sample statistics of an epoch as one tensor each."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def batch_loss_sum(loss: torch.Tensor, n: int, loss_fn: nn.Module) -> torch.Tensor:
    """The batch's summed per-sample loss in float64, from the shared loss's reduced value."""
    loss = loss.detach().double()
    return loss if getattr(loss_fn, "reduction", "mean") == "sum" else loss * n


def top1_classes(logits: torch.Tensor, targets: torch.Tensor, dim: int = 1) -> torch.Tensor | None:
    """Each sample's predicted class (one kernel: argmax is not differentiable, so no detach);
    None where accuracy has no meaning (regression targets). A fused group's logits carry the
    members in dim 0 and the classes in `dim` 2."""
    if not (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)):  # several heads: each head's acc is a metric
        return None
    if logits.ndim != dim + 1 or targets.ndim != 1 or targets.is_floating_point():
        return None
    return logits.argmax(dim=dim)


def concat(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """An epoch's per-batch statistics as one tensor per statistic, on the CPU."""
    return {k: torch.cat([b[k] for b in batches if k in b]).cpu() for k in batches[0]}  # some only in the first (tasks.shown)


@dataclass
class Meter:
    """Evaluation sums, kept on the device (no host sync per batch); read once per epoch.
    Training steps go to a StepLog (runner/engine/step_log.py)."""

    loss_sum: torch.Tensor | float = 0.0
    correct: torch.Tensor | int | None = 0
    seen: int = 0

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor | None, n: int) -> None:
        self.loss_sum = self.loss_sum + loss_sum
        self.correct = None if correct is None or self.correct is None else self.correct + correct
        self.seen += n

    def loss(self) -> float:
        return float(self.loss_sum) / self.seen if self.seen else math.nan

    def accuracy(self) -> float:
        return int(self.correct) / self.seen if self.seen and self.correct is not None else math.nan

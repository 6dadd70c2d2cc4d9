"""A slot: everything that belongs to one model and nothing else (DESIGN.md).

The engine only calls `train_step`, `eval_step` and `end_epoch`, so other kinds of slot
(a fused group, a DDP-wrapped model) can stand behind the same interface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from runner.rng import RngStream
from runner.timing import WorkTimer

RUNNING, DONE = "running", "done"


def batch_loss_sum(loss: torch.Tensor, n: int, loss_fn: nn.Module) -> torch.Tensor:
    """The batch's summed per-sample loss in float64, from the shared loss's reduced value."""
    loss = loss.detach().double()
    return loss if getattr(loss_fn, "reduction", "mean") == "sum" else loss * n


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Top-1 hits for class-index targets; None where accuracy has no meaning (regression)."""
    if logits.ndim != 2 or targets.ndim != 1 or targets.is_floating_point():
        return None
    return (logits.argmax(dim=1) == targets).sum()


@dataclass
class Meter:
    """Sums kept on the device (no host sync per step); read once per epoch."""

    loss_sum: torch.Tensor | float = 0.0
    correct: torch.Tensor | int | None = 0
    seen: int = 0
    grad_norms: list[torch.Tensor] = field(default_factory=list)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor | None, n: int) -> None:
        self.loss_sum = self.loss_sum + loss_sum
        self.correct = None if correct is None or self.correct is None else self.correct + correct
        self.seen += n

    def loss(self) -> float:
        return float(self.loss_sum) / self.seen if self.seen else math.nan

    def accuracy(self) -> float:
        return int(self.correct) / self.seen if self.seen and self.correct is not None else math.nan


class Slot:
    def __init__(self, name: str, model: nn.Module, optimizer, scheduler, scheduler_interval: str, rng: RngStream, device: torch.device, info: dict):
        self.name = name
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.rng = rng
        self.device = device
        self.info = info  # arch, params, seed, optimizer: static facts for the leaderboard
        self.status = RUNNING
        self.timer, self.eval_timer = WorkTimer(device), WorkTimer(device)
        self.train_meter, self.test_meter = Meter(), Meter()
        self.last_loss: torch.Tensor | None = None  # for the progress display
        self._test_preds: list[torch.Tensor] = []
        self.predictions: torch.Tensor | None = None  # last evaluation's top-1 classes, on the CPU

    @property
    def live(self) -> bool:
        return self.status == RUNNING

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> None:
        self.timer.start()
        with self.rng.active():
            logits = self.model(x)
            loss = loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            self.train_meter.grad_norms.append(torch.nn.utils.get_total_norm(grads))
            self.optimizer.step()
            if self.scheduler is not None and self.scheduler_interval == "step":
                self.scheduler.step()
        self.train_meter.add(batch_loss_sum(loss, len(y), loss_fn), correct_count(logits.detach(), y), len(y))
        self.last_loss = loss.detach()
        self.timer.stop()

    def eval_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> None:
        """One test batch; the caller holds `torch.no_grad()` and has called `model.eval()`."""
        self.eval_timer.start()
        with self.rng.active():
            logits = self.model(x)
            loss = loss_fn(logits, y)
        self.test_meter.add(batch_loss_sum(loss, len(y), loss_fn), correct_count(logits, y), len(y))
        if logits.ndim == 2:
            self._test_preds.append(logits.argmax(dim=1))
        self.eval_timer.stop()

    def end_epoch(self, epoch: int) -> dict:
        """This epoch's record (one history row); steps an epoch scheduler; resets the meters."""
        train, test = self.train_meter, self.test_meter
        norms = torch.stack(train.grad_norms).double() if train.grad_norms else torch.tensor([math.nan])
        finite = norms[torch.isfinite(norms)]
        seconds = self.timer.seconds()
        record = {
            "model": self.name,
            "epoch": epoch,
            "train_loss": train.loss(),
            "train_acc": train.accuracy(),
            "test_loss": test.loss(),
            "test_acc": test.accuracy(),
            "grad_norm_mean": float(finite.mean()) if len(finite) else math.nan,
            "grad_norm_max": float(finite.max()) if len(finite) else math.nan,
            "grad_nonfinite": int(len(norms) - len(finite)) if train.grad_norms else 0,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": seconds,
            "eval_time_s": self.eval_timer.seconds(),
            "samples_per_s": train.seen / seconds if seconds > 0 else math.nan,
            "train_samples": train.seen,
            "status": self.status,
        }
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record["test_loss"])
            else:
                self.scheduler.step()
        self.predictions = torch.cat(self._test_preds).cpu() if self._test_preds else None
        self._test_preds = []
        self.train_meter, self.test_meter = Meter(), Meter()
        self.timer.reset()
        self.eval_timer.reset()
        return record

"""A model's training epoch, step by step, kept on its device: no host sync per step.

A step appends to lists: its detached loss, its predicted classes (one argmax) beside its
targets, and its gradient norms (one `torch._foreach_norm`). Every COMPACT_EVERY steps the lists
become one tensor of rows (loss, hits, norms) in a few ops for all those steps; the hits are
counted there, for all the steps at once, because a small model's step is a few hundred
microseconds of kernel launches and each kernel a step adds shows. A long epoch holds a few
tensors, not a few per step. Nothing is read back until a read point (the
engine's health check at the end of the epoch's training and before every checkpoint, the
epoch's history row); there the rows are copied to the host once.

The epoch's loss is then summed on the host in step order, in float64, exactly as a hand-written
loop's `total += loss.item() * len(targets)` (DESIGN.md: plain-loop equivalence), and the
health check finds the first non-finite step, so a diverged model's `stopped_at` names the step
where it went non-finite even though it is noticed later. Its rows after that step are dropped:
its history row reads as if it had stopped there.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from compare.engine.head_steps import HeadSteps

LOSS, HITS, NORMS = 0, 1, 2  # columns of a row; NORMS on: one gradient norm per parameter tensor
COMPACT_EVERY = 256  # steps between stacking the pending lists into rows (a few kernels, no sync)


class StepLog:
    def __init__(self, epoch: int = 0):
        self.epoch = epoch
        self.chunks: list[torch.Tensor] = []  # [steps, 2 + norms] float64, on the model's device
        self.losses: list[torch.Tensor] = []  # pending steps, not yet in a chunk
        self.top1: list[torch.Tensor] = []  # pending steps' predicted classes, beside their targets
        self.targets: list[torch.Tensor] = []
        self.norms: list[Sequence[torch.Tensor]] = []  # per step: one 0-d norm per gradient
        self.steps: list[int] = []  # each row's step number in the epoch
        self.sizes: list[int] = []  # each row's batch size
        self.stepped: list[bool] = []  # each row: did the optimizer step (gradient accumulation: only every k-th batch)
        self.summed = False  # the shared loss has reduction="sum": the row's loss is the batch's sum already
        self.has_hits = True  # False where accuracy has no meaning (regression targets)
        self.checked = 0  # rows the health check found finite
        self.totals: tuple[float, int | None, int] | None = None  # (loss sum, hits, seen) over DDP ranks
        self.heads = HeadSteps()  # a loss per head: each head's loss per step (train_<head>/loss)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def seen(self) -> int:
        return self.totals[2] if self.totals is not None else sum(self.sizes)

    def record(self, loss: torch.Tensor, top1: torch.Tensor | None, targets: torch.Tensor, norms: Sequence[torch.Tensor] | None, size: int, step: int, summed: bool) -> None:
        """One step: `loss` detached, `top1` the predicted classes (None for regression) of
        `targets`, `norms` 0-d, one per gradient (None: a batch whose gradients accumulate, no step)."""
        self.has_hits = self.has_hits and top1 is not None
        self.summed = summed
        self.losses.append(loss)
        self.heads.record(loss)
        if self.has_hits:
            self.top1.append(top1)
            self.targets.append(targets)
        self.stepped.append(norms is not None)
        self.norms.append(norms if norms is not None else [])
        self.steps.append(step)
        self.sizes.append(size)
        if len(self.losses) >= COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if not self.losses:
            return
        steps, width = len(self.losses), max(len(n) for n in self.norms)
        zero = self.losses[0].new_zeros(())  # a fused group dissolved in this chunk: its members' rows widen from 1 norm to one per gradient
        flat = [t for n in self.norms for t in (n if len(n) == width else [*n, *[zero] * (width - len(n))])]
        norms = torch.stack(flat).view(steps, width) if width else self.losses[0].new_zeros((steps, 0))  # one stack for every norm
        losses = torch.stack(self.losses)
        hits = (self._hits(self.sizes[len(self.sizes) - steps:]) if self.has_hits else losses).double()
        # The float64 hits column makes cat promote the others to float64 too, exactly.
        self.chunks.append(torch.cat([losses[:, None], hits[:, None], norms], dim=1))
        self.losses, self.top1, self.targets, self.norms = [], [], [], []
        self.heads.compact()

    def _hits(self, sizes: list[int]) -> torch.Tensor:
        """Each pending step's top-1 hits, counted for all of them at once."""
        right = torch.cat(self.top1) == torch.cat(self.targets)
        if len(set(sizes)) == 1:
            return right.view(len(sizes), -1).sum(dim=1)
        # An epoch's short last batch: sum by step index (built on the host: no sync).
        step_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(right.device, non_blocking=True)
        return right.new_zeros(len(sizes), dtype=torch.long).index_add_(0, step_of, right.long())

    def rows(self) -> torch.Tensor | None:
        """Every step's row, on the device (one tensor); None before the first step."""
        self._compact()
        if not self.chunks:
            return None
        if len(self.chunks) > 1:
            width = max(c.shape[1] for c in self.chunks)  # a dissolved fused group widens its members' rows
            self.chunks = [torch.cat([c if c.shape[1] == width else torch.nn.functional.pad(c, (0, width - c.shape[1])) for c in self.chunks])]
        return self.chunks[0]

    # ------------------------------------------------------------ read points (host syncs)

    def _host(self) -> torch.Tensor:
        rows = self.rows()
        return rows.cpu() if rows is not None else torch.zeros((0, NORMS), dtype=torch.float64)

    def truncate(self, n: int) -> None:
        """Keep the first `n` rows: what a model that left the pass at row n-1 trained."""
        rows = self.rows()
        if rows is not None:
            self.chunks = [rows[:n]]
        del self.steps[n:], self.sizes[n:], self.stepped[n:]
        self.heads.truncate(n)
        self.checked = min(self.checked, n)

    def summary(self) -> dict:
        """The epoch's training columns of a history row."""
        rows = self._host()
        if self.totals is not None:
            loss_sum, hits, seen = self.totals
        else:
            loss_sum, hits, seen = self.host_totals(rows)
        norms = self.grad_norms(rows)
        finite = norms[torch.isfinite(norms)]
        return {
            "train_loss": loss_sum / seen if seen else math.nan,
            "train_acc": hits / seen if seen and hits is not None else math.nan,
            "grad_norm_mean": float(finite.mean()) if len(finite) else math.nan,
            "grad_norm_max": float(finite.max()) if len(finite) else math.nan,
            "grad_norm_last": float(norms[-1]) if len(norms) else math.nan,
            "grad_nonfinite": len(norms) - len(finite),
            "train_samples": seen,
        } | self.heads.summary(self.sizes)

    def mean_loss(self) -> float:
        """The epoch's mean train loss so far, this process's steps (a read: one host sync; the
        progress display calls it at most every refresh)."""
        loss_sum, _, seen = self.host_totals()
        return loss_sum / seen if seen else math.nan

    def grad_norms(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Each optimizer step's total gradient L2 norm (as `torch.nn.utils.get_total_norm`), on the host."""
        rows = self._host() if rows is None else rows
        norms = torch.linalg.vector_norm(rows[:, NORMS:], dim=1) if rows.shape[1] > NORMS else torch.zeros(len(rows), dtype=torch.float64)
        return norms if all(self.stepped) else norms[torch.tensor(self.stepped[: len(norms)], dtype=torch.bool)]

    def host_totals(self, rows: torch.Tensor | None = None) -> tuple[float, int | None, int]:
        """(loss sum, top-1 hits or None, samples), summed in step order in float64."""
        rows = self._host() if rows is None else rows
        loss_sum = 0.0
        for loss, size in zip(rows[:, LOSS].tolist(), self.sizes):
            loss_sum += loss if self.summed else loss * size
        hits = int(rows[:, HITS].sum()) if self.has_hits else None
        return loss_sum, hits, sum(self.sizes)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "rows": self._host(), "steps": list(self.steps), "sizes": list(self.sizes),
            "summed": self.summed, "has_hits": self.has_hits, "checked": self.checked, "stepped": list(self.stepped),
            "heads": self.heads.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "StepLog":
        log = cls(state["epoch"])
        log.steps, log.sizes, log.summed, log.has_hits, log.checked = list(state["steps"]), list(state["sizes"]), state["summed"], state["has_hits"], state["checked"]
        log.chunks = [state["rows"].to(device)] if len(log.steps) else []
        log.stepped = list(state.get("stepped", [True] * len(log.steps)))
        log.heads = HeadSteps.from_state(state.get("heads"), device)
        return log


def first_nonfinite(logs: Sequence[tuple[StepLog, bool]]) -> list[int | None]:
    """For each (log, loss_only): the index of its first unchecked row whose loss (or, unless
    `loss_only`, any entry) is not finite; None where all are finite. One host copy per device
    for all the logs: the engine checks every model at once at a read point."""
    pending: dict[torch.device, list[tuple[StepLog, int, torch.Tensor]]] = {}
    for log, loss_only in logs:
        n = len(log.steps)
        if log.checked < n:
            rows = log.rows()[log.checked : n]
            # A row's float64 sum is finite iff all its entries are (values from float32 or narrower cannot overflow it).
            pending.setdefault(rows.device, []).append((log, n, rows[:, LOSS] if loss_only else rows.sum(dim=1)))
    first: dict[int, int] = {}
    for group in pending.values():
        finite = torch.isfinite(torch.cat([sums for _, _, sums in group])).tolist()
        start = 0
        for log, n, sums in group:
            ok = finite[start : start + len(sums)]
            start += len(sums)
            if all(ok):
                log.checked = n
            else:
                first[id(log)] = log.checked + ok.index(False)
    return [first.get(id(log)) for log, _ in logs]

"""A loss per head, in training: each step's loss of each head, kept on the device beside the
step log (runner/engine/step_log.py holds one) and read with it, so history.csv gets
`train_<head>/loss` next to `train_loss` (their weighted sum). The values ride on the step's
loss (`loss.heads`, set by runner/resolve/head_losses.py); a loss without them keeps nothing."""
from __future__ import annotations

import math

import torch


class HeadSteps:
    def __init__(self):
        self.names: list[str] = []  # the heads, in the loss's order
        self.pending: list[torch.Tensor] = []  # per step: [heads] on the device
        self.rows: torch.Tensor | None = None  # [steps, heads] float64, compacted

    def record(self, loss: torch.Tensor) -> None:
        values = getattr(loss, "heads", None)
        if values:
            self.names = list(values)
            self.pending.append(torch.stack([v.detach().double() for v in values.values()]))

    def compact(self) -> None:
        if self.pending:
            stacked = torch.stack(self.pending)
            self.rows = stacked if self.rows is None else torch.cat([self.rows, stacked])
            self.pending = []

    def truncate(self, n: int) -> None:
        self.compact()
        if self.rows is not None:
            self.rows = self.rows[:n]

    def summary(self, sizes: list[int]) -> dict[str, float]:
        """`train_<head>/loss`: each head's loss per sample over the epoch (each step's batch
        mean times its size, summed in step order in float64, as `train_loss`)."""
        self.compact()
        if self.rows is None or not self.names:
            return {}
        seen = sum(sizes[: len(self.rows)])
        out = {}
        for j, head in enumerate(self.names):
            total = 0.0
            for value, size in zip(self.rows[:, j].cpu().tolist(), sizes):
                total += value * size
            out[f"train_{head}/loss"] = total / seen if seen else math.nan
        return out

    def state_dict(self) -> dict:
        self.compact()
        return {"names": list(self.names), "rows": None if self.rows is None else self.rows.cpu()}

    @classmethod
    def from_state(cls, state: dict | None, device: torch.device) -> "HeadSteps":
        out = cls()
        if state:
            out.names, out.rows = list(state["names"]), None if state["rows"] is None else state["rows"].to(device)
        return out

"""Per-model decisions on one epoch metric: the best epoch so far, and early stopping.

Both read val (or train), never test: the test split is read only for the reported numbers.
The report (runner/report/leaderboard.py) picks the same best epoch from history.csv with
`selection_metric` and the same rule: the first epoch with the best value; NaN never improves.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from compare.metrics.builtin import higher_is_better


@dataclass
class BestEpoch:
    metric: str
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    higher: bool | None = None  # a metric of the user's own: its direction (built-ins know theirs)

    def improved(self, record: dict) -> bool:
        """Feed one epoch's record; True when it is the best so far (by more than min_delta)."""
        value = record[self.metric]
        if math.isnan(value):
            return False
        if self.best is not None and not (value > self.best + self.min_delta if higher_is_better(self.metric, self.higher) else value < self.best - self.min_delta):
            return False
        self.best, self.best_epoch = value, record["epoch"]
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class EarlyStopping(BestEpoch):
    metric: str = "val_loss"
    patience: int = 3  # epochs without improvement before stopping
    bad_epochs: int = 0

    def update(self, record: dict) -> bool:
        """Feed one epoch's record; True when the model should stop."""
        self.bad_epochs = 0 if self.improved(record) else self.bad_epochs + 1
        return self.bad_epochs >= self.patience

"""Per-model early stopping on one epoch metric."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    metric: str = "test_loss"
    patience: int = 3  # epochs without improvement before stopping
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    @property
    def maximize(self) -> bool:
        return self.metric.endswith("_acc")

    def update(self, record: dict) -> bool:
        """Feed one epoch's record; True when the model should stop."""
        value = record[self.metric]
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        else:
            improved = value > self.best + self.min_delta if self.maximize else value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

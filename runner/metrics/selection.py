"""The selection rule every training-time decision and the report share: which val metric a
model's best epoch is chosen on. Below runner/engine (early stopping, the best epoch) and
runner/report (the leaderboard picks the same epoch from history.csv); the direction it is
chosen in: runner/metrics/builtin.py `higher_is_better`."""
from __future__ import annotations

import math

from compare.metrics.builtin import split_column


def selection_metric(stop_metric: str | None, val_acc: float, rank: str | None = None) -> str:
    """The val metric a model's best epoch is chosen on: its early-stopping metric when that
    reads val, else the run's rank metric on val (`[report] rank_by`; a task's first metric
    where accuracy has no meaning), else val_acc (val_loss where accuracy is NaN)."""
    if stop_metric is not None and stop_metric.startswith("val_"):
        return stop_metric
    if rank is not None:
        return rank
    return "val_loss" if math.isnan(val_acc) else split_column("val")

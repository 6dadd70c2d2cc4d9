"""Descriptive summaries the reports draw: the Pareto front of cost against value and the
confusion matrix. Pure functions: arrays in, arrays out. The intervals and paired tests live in
runner/metrics/significance.py, their power and MDE in runner/metrics/power.py."""
from __future__ import annotations

import numpy as np


def pareto_front(cost, value) -> np.ndarray:
    """Mask of the points no other point beats on both axes (lower-or-equal cost and
    higher-or-equal value, strictly better on one). NaN points are never on the front."""
    c, v = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    front = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        front[i] = not dominated.any()
    return front


def confusion_matrix(target, predicted, n_classes: int) -> np.ndarray:
    """counts[true, predicted] as an (n_classes, n_classes) int array."""
    t, p = np.asarray(target, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)

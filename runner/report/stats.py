"""Descriptive summaries the reports draw: the Pareto front of cost against value and the
confusion matrix, and the band over seeds that the learning curves and TensorBoard draw. Pure
functions: arrays in, arrays out. The intervals and paired tests live in
runner/metrics/significance.py, their power and MDE in runner/metrics/power.py."""
from __future__ import annotations

import numpy as np

from compare.metrics.significance import t_interval, within


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


def seed_band(values: np.ndarray, log: bool = False, bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float, float]:
    """(centre, low, high) over seeds: mean (geometric for log axes), min-max for 2 seeds,
    the 95% t-interval (of the log for log axes) from 3, clipped to the values the metric can
    take (`bounds`: an F1 band stops at 1); no band (NaN) for one seed."""
    x = values[np.isfinite(values)]
    if log:
        x = np.log(x[x > 0])
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    centre, low, high = float(x.mean()), np.nan, np.nan
    if len(x) == 2:
        low, high = float(x.min()), float(x.max())
    elif len(x) >= 3:
        iv = t_interval(x) if log else within(t_interval(x), bounds)  # exp() keeps a log band above 0
        low, high = iv.low, iv.high
    return tuple(float(np.exp(v)) for v in (centre, low, high)) if log else (centre, low, high)

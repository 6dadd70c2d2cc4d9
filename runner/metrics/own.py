"""A metric of the user's own (`[report] metrics = ["my_metrics.py:iou"]`, docs/metrics.md),
called the way evaluation and the report call it, with its results checked: what it raises or
returns that is not one number per row of sample weights is one UserCodeError line naming it
(exit 2), not an internal error at the first evaluation. Built-in metrics do not come here."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from compare.errors import UserCodeError, one_line
from compare.metrics.builtin import Kept, Metric

WHERE = "report.metrics"  # the key that names it, first in every line


def value(metric: Metric, kept: Kept, when: str) -> float:
    """`metric.value(kept)`, checked (evaluation's call: one row of weights)."""
    if not len(kept):
        return math.nan
    return float(_rows(_parts(metric, kept, when), kept, 1, when)[0])


def check(metric: Metric, kept: Kept, when: str) -> None:
    """Call the metric as evaluation does (one row of weights) and as the paired bootstrap does
    (a row per resample: two here); refuse the first wrong result."""
    checked = _parts(metric, kept, when)
    for rows in (1, 2):
        _rows(checked, kept, rows, when)


def check_needs(metric: Metric, have: set[str], task: str) -> None:
    """A metric that needs a statistic the task does not keep (`top1` on a task that keeps only
    the targets): refused before it is called, naming what the task keeps."""
    missing = [n for n in metric.needs if n not in have]
    if missing:
        raise UserCodeError(f"{WHERE}: metric {metric.name!r} needs {', '.join(missing)}, which the task, {task}, does not keep; "
                            f"it keeps {', '.join(sorted(have))} (docs/metrics.md, \"A metric of your own\")")


def _parts(metric: Metric, kept: Kept, when: str) -> Metric:
    """`metric` with its per-sample part (per_sample or features) computed once and checked."""
    n = len(kept)
    if metric.per_sample is not None:
        x = _numbers(metric, "per_sample", when, _call(metric, "per_sample", when, metric.per_sample, kept), f"an array of {n} numbers, one per sample")
        if x.shape != (n,):
            _refuse(metric, when, f"per_sample returned an array of shape {x.shape} for {n} samples; expected ({n},), one number per sample")
        return replace(metric, per_sample=lambda _: x)
    if metric.features is not None:
        f = _numbers(metric, "features", when, _call(metric, "features", when, metric.features, kept), f"an array of shape ({n}, K), K numbers per sample")
        if f.ndim != 2 or len(f) != n:
            _refuse(metric, when, f"features returned an array of shape {f.shape} for {n} samples; expected ({n}, K), K numbers per sample")
        return replace(metric, features=lambda _: f)
    return metric


def _rows(metric: Metric, kept: Kept, rows: int, when: str) -> np.ndarray:
    """The metric under `rows` rows of unit sample weights: `rows` numbers, else refused."""
    part = "from_sums" if metric.features is not None else "weighted" if metric.per_sample is None else "finish" if metric.finish else "per_sample"
    dtype = np.float64 if rows == 1 else np.float32  # as Metric.value and the bootstrap call it
    out = _call(metric, part, when, lambda: metric.resampler(kept, dtype)(np.ones((rows, len(kept)))))
    got = _numbers(metric, part, when, out, f"{rows} number{'s' if rows > 1 else ''}, one per row of sample weights")
    if got.shape != (rows,):
        _refuse(metric, when, f"{part} gave shape {got.shape} under sample weights of shape ({rows}, {len(kept)}); expected ({rows},), one value per row")
    return got


def _call(metric: Metric, part: str, when: str, fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - the user's code
        raise UserCodeError(f"{WHERE}: metric {metric.name!r} ({when}): {part} raised {type(err).__name__}: {one_line(err)}") from err


def _numbers(metric: Metric, part: str, when: str, out: Any, expected: str) -> np.ndarray:
    """`out` as a float array, or refused with what it is."""
    try:
        got = None if out is None else np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        got = None
    if got is None:
        kind = f"an array of {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        _refuse(metric, when, f"{part} returned {kind}; expected {expected}")
    return got


def _refuse(metric: Metric, when: str, what: str) -> None:
    raise UserCodeError(f"{WHERE}: metric {metric.name!r} ({when}): {what} (docs/metrics.md, \"A metric of your own\")")

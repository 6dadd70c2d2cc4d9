"""Metrics of the user's own, by reference in `[report] metrics` (docs/metrics.md, "A metric
of your own"): resolved like a model reference, checked to be a compare.metrics Metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compare.resolve import references
from compare.errors import CompareError, Problem, UserCodeError
from compare.metrics.builtin import Metric

def is_metric_reference(name: Any) -> bool:
    return isinstance(name, str) and ":" in name


def resolve_metric(reference: str, base_dir: str | Path = ".") -> Metric:
    """`my_metrics.py:iou` -> the Metric it names (docs/metrics.md, "A metric of your own")."""
    obj = references.resolve(reference, base_dir)
    if not isinstance(obj, Metric):
        raise UserCodeError(f"{reference} is {type(obj).__name__}, not a compare.metrics.builtin.Metric (docs/metrics.md shows one)")
    return obj


def check_metrics(names: list, file: str, key: str, base_dir: str | Path = ".") -> list[Problem]:
    problems = []
    for i, name in enumerate(names):
        if is_metric_reference(name):
            try:
                resolve_metric(name, base_dir)
            except CompareError as err:
                problems.append(Problem(file, f"{key}[{i}]", str(err)))
    return problems


def user_metrics(names: list | None, base_dir: str | Path = ".") -> dict[str, Metric]:
    """name -> Metric for the references among `[report] metrics`."""
    found = (resolve_metric(n, base_dir) for n in names or [] if is_metric_reference(n))
    return {m.name: m for m in found}


def metric_names(names: list | None, base_dir: str | Path = ".") -> list[str] | None:
    """`[report] metrics` as names (a reference becomes its Metric's name)."""
    if names is None:
        return None
    return [resolve_metric(n, base_dir).name if is_metric_reference(n) else n for n in names]

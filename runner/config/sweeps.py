"""Sweeps: one `[[model]]` table with `sweep = { "dotted.key" = [values, ...], ... }` becomes the
grid of models, all trained in the same shared pass.

    [[model]]
    name = "tudui"
    arch = "tudui"
    optimizer = { name = "SGD", lr = 0.1 }
    sweep = { "optimizer.lr" = [0.1, 0.03], "args.width" = [32, 64] }

expands to tudui[lr=0.1,width=32], tudui[lr=0.1,width=64], tudui[lr=0.03,width=32] and
tudui[lr=0.03,width=64]. Keys are dotted paths inside the model's table. Expansion happens
before validation, so every point is checked like a hand-written model. Each point carries
`sweep_values = { lr = 0.1, width = 32 }`: leaderboard columns `sweep.lr`, `sweep.width`.
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Any

from runner.errors import Problem, shown
from runner.config.overrides import plain_copy

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")
_NOT_SWEPT = ("name", "sweep", "sweep_values")
MAX_MODELS = 10_000  # models one config may make with its sweeps


def expand(models: list, source: str, problems: list[Problem]) -> tuple[list, dict[str, list[str]]]:
    """The model tables with every sweep expanded, and {swept model name: its point names}.
    The grid is counted before anything is expanded: past MAX_MODELS, nothing is."""
    count = sum(_size(entry) for entry in models)
    if count > MAX_MODELS:
        problems.append(Problem(source, "model", f"the sweeps make {count:,} models; at most {MAX_MODELS:,} per config (split the grid over several configs)"))
        return [{k: v for k, v in e.items() if k != "sweep"} if isinstance(e, dict) else e for e in models], {}
    out, points = [], {}
    for entry in models:
        if not isinstance(entry, dict) or "sweep" not in entry:
            out.append(entry)
            continue
        base = {k: v for k, v in entry.items() if k != "sweep"}
        name = entry.get("name")
        where = f"model.{name}.sweep" if isinstance(name, str) else "model[?].sweep"
        grid = _grid(entry["sweep"], where, source, problems)
        if grid is None or not isinstance(name, str):
            out.append(base)  # validated as it is; the sweep's problem is already reported
            continue
        labels = _labels(list(grid))
        texts = {key: _texts(values) for key, values in grid.items()}
        points[name] = []
        for combo in itertools.product(*(range(len(v)) for v in grid.values())):
            point = _with_values(base, {key: grid[key][i] for key, i in zip(grid, combo)}, where, source, problems)
            if point is None:
                break
            tags = ",".join(f"{labels[key]}={texts[key][i]}" for key, i in zip(grid, combo))
            point["name"] = f"{name}[{tags}]"
            point["sweep_values"] = dict(entry.get("sweep_values") or {}) | {labels[key]: _plain(grid[key][i], texts[key][i]) for key, i in zip(grid, combo)}
            points[name].append(point["name"])
            out.append(point)
    return out, points


def _size(entry: Any) -> int:
    """How many models one [[model]] table makes (1 when its sweep is malformed)."""
    spec = entry.get("sweep") if isinstance(entry, dict) else None
    if not isinstance(spec, dict):
        return 1
    return math.prod(len(v) if isinstance(v, list) and v else 1 for v in spec.values())


def _grid(spec: Any, where: str, source: str, problems: list[Problem]) -> dict[str, list] | None:
    if not isinstance(spec, dict) or not spec:
        problems.append(Problem(source, where, f'expected a table like {{ "optimizer.lr" = [0.1, 0.01] }}, got {shown(spec)}'))
        return None
    ok = True
    for key, values in spec.items():
        if key.split(".")[0] in _NOT_SWEPT:
            problems.append(Problem(source, f"{where}.{key}", f"{key} cannot be swept"))
            ok = False
        elif not isinstance(values, list) or not values:
            problems.append(Problem(source, f"{where}.{key}", f"expected a non-empty array of values, got {shown(values)}"))
            ok = False
    return dict(spec) if ok else None


def _with_values(base: dict, values: dict[str, Any], where: str, source: str, problems: list[Problem]) -> dict | None:
    """A copy of `base` with each dotted key set (tables on the way are created)."""
    point = plain_copy(base)
    for key, value in values.items():
        *path, last = key.split(".")
        table = point
        for part in path:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                problems.append(Problem(source, f"{where}.{key}", f"{part} is not a table in this model"))
                return None
        table[last] = value
    return point


def _labels(keys: list[str]) -> dict[str, str]:
    """`optimizer.lr` -> `lr`, unless another swept key also ends in `lr` (then the whole key)."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def _texts(values: list) -> list[str]:
    """Path-safe text per value; the values' positions where two would read the same."""
    texts = [format_value(v) for v in values]
    return texts if len(set(texts)) == len(texts) else [str(i) for i in range(len(values))]


def _plain(value: Any, text: str) -> Any:
    """The value for the leaderboard and config.toml: itself when TOML can hold it, else its text."""
    return value if isinstance(value, (str, int, float, bool, list)) else text


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back the same: 0.1, 0.0003, 1e-05
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)  # hidden = [64, 32] -> 64x32
    if isinstance(value, dict):
        return format_value(value.get("name", "table"))  # optimizer = { name = "SGD", ... } -> SGD
    text = _UNSAFE.sub("-", value if isinstance(value, str) else getattr(value, "__name__", type(value).__name__))
    while ".." in text:
        text = text.replace("..", ".")
    return text or "-"


def collapse(problems: list[Problem], points: dict[str, list[str]]) -> list[Problem]:
    """A problem every point of a sweep shares comes from the table as written: report it
    once, at `model.<name>.<key>`, instead of once per point."""
    base_of = {n: b for b, names in points.items() for n in names}
    located = [_point_key(p.key, base_of) for p in problems]
    reached: dict[tuple, set[str]] = {}  # (base, rest of the key, message) -> the points that have it
    for p, where in zip(problems, located):
        if where is not None:
            reached.setdefault((base_of[where[0]], where[1], p.message), set()).add(where[0])
    out, done = [], set()
    for p, where in zip(problems, located):
        if where is None:
            out.append(p)
            continue
        group = (base_of[where[0]], where[1], p.message)
        if len(reached[group]) < len(points[group[0]]):
            out.append(p)  # only some points: the swept values are the problem
        elif group not in done:
            done.add(group)
            out.append(Problem(p.file, f"model.{group[0]}.{group[1]}", p.message))
    return out


def _point_key(key: str, base_of: dict[str, str]) -> tuple[str, str] | None:
    """`model.tudui[lr=0.1].optimizer.lr` -> ("tudui[lr=0.1]", "optimizer.lr") when that is a
    sweep point; point names end in "]" and may hold dots, so each "]." is tried in turn."""
    if not key.startswith("model."):
        return None
    rest = key[len("model."):]
    at = rest.find("].")
    while at != -1:
        if rest[: at + 1] in base_of:
            return rest[: at + 1], rest[at + 2 :]
        at = rest.find("].", at + 1)
    return None

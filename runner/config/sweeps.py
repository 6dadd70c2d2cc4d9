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

`search = {...}` samples the points instead (runner/config/search.py). Either way the points of
one [[model]] table form its family (`family = "tudui"`, the table's name), described for the
plan and the family verdict in the config's `[families.<name>]` (docs/tuning.md).
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Any

from compare.errors import Problem, shown
from compare.config import search
from compare.config.overrides import plain_copy
from compare.config.schema import DEFAULT_OPTIMIZER

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")
_NOT_SWEPT = ("name", "sweep", "sweep_values", "search", "family")
MAX_MODELS = 10_000  # models one config may make with its sweeps


def expand(models: list, source: str, problems: list[Problem], spaces: dict | None = None) -> tuple[list, dict[str, list[str]], dict[str, dict]]:
    """The model tables with every sweep and search expanded, {swept model name: its point
    names}, and {family: how its points were made}. The grid is counted before anything is
    expanded: past MAX_MODELS, nothing is."""
    count = sum(_size(entry) for entry in models)
    if count > MAX_MODELS:
        problems.append(Problem(source, "model", f"the sweeps make {count:,} models; at most {MAX_MODELS:,} per config (split the grid over several configs)"))
        return [{k: v for k, v in e.items() if k not in ("sweep", "search")} if isinstance(e, dict) else e for e in models], {}, {}
    out, points, families = [], {}, {}
    for entry in models:
        if not isinstance(entry, dict) or ("sweep" not in entry and "search" not in entry):
            out.append(entry)
            continue
        base = {k: v for k, v in entry.items() if k not in ("sweep", "search")}
        name = entry.get("name")
        label = name if isinstance(name, str) else "[?]"
        if "sweep" in entry and "search" in entry:
            problems.append(Problem(source, f"model.{label}.search", "sweep (a grid) and search (sampled points) cannot be combined in one model: put the grid's keys into the search space as { choice = [...] }"))
            out.append(base)
            continue
        made = _made_points(entry, label, source, problems, spaces or {})
        if made is None or not isinstance(name, str):
            out.append(base)  # validated as it is; the sweep's problem is already reported
            continue
        family, values = made
        families[name], points[name] = family, []
        labels = _labels(list(family["space"]))
        grid = family["sampler"] == "grid"
        for trial, (chosen, text) in enumerate(values, 1):
            point = _with_values(base, chosen, f"model.{label}.{'sweep' if grid else 'search'}", source, problems)
            if point is None:
                break
            tags = ",".join(f"{labels[key]}={text[key]}" for key in chosen)
            point["name"] = f"{name}[{tags}]" if grid else f"{name}[trial={trial},{tags}]"
            point["sweep_values"] = dict(entry.get("sweep_values") or {}) | {labels[key]: _plain(v, text[key]) for key, v in chosen.items()}
            point["family"] = name
            points[name].append(point["name"])
            out.append(point)
    return out, points, families


def _made_points(entry: dict, label: str, source: str, problems: list[Problem], spaces: dict) -> tuple[dict, list[tuple[dict, dict]]] | None:
    """(the family's description, ({dotted key: value}, {dotted key: its text}) per point) of a
    sweep or a search."""
    if "search" in entry:
        spec = search.parse(entry["search"], spaces, f"model.{label}.search", source, problems)
        return None if spec is None else (spec, [(p, {k: format_value(v) for k, v in p.items()}) for p in search.sample(spec)])
    grid = _grid(entry["sweep"], f"model.{label}.sweep", source, problems)
    if grid is None:
        return None
    texts = {key: _texts(values) for key, values in grid.items()}  # by position: values may be unhashable tables
    combos = [({k: grid[k][i] for k, i in zip(grid, c)}, {k: texts[k][i] for k, i in zip(grid, c)}) for c in itertools.product(*(range(len(v)) for v in grid.values()))]
    return {"sampler": "grid", "trials": len(combos), "space": {key: {"choice": values} for key, values in grid.items()}}, combos


def _size(entry: Any) -> int:
    """How many models one [[model]] table makes (1 when its sweep is malformed)."""
    spec = entry.get("sweep") if isinstance(entry, dict) else None
    trials = entry.get("search", {}).get("trials") if isinstance(entry, dict) and isinstance(entry.get("search"), dict) else None
    if isinstance(trials, int) and not isinstance(trials, bool) and trials > 0:
        return trials
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
    if "optimizer" not in point and any(key.startswith("optimizer.") for key in values):
        point["optimizer"] = dict(DEFAULT_OPTIMIZER)  # what the model trains with unswept
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

"""Search spaces beyond grids: `[[model]] search = {...}` samples `trials` points of a space at
random or quasi-random (scrambled Sobol, scipy.stats.qmc), seeded, so a config always expands
to the same models (docs/tuning.md).

    [spaces.lr_wd]                                   # a named space, shared by families
    "optimizer.lr" = { log_uniform = [0.003, 0.5] }
    "optimizer.weight_decay" = { log_uniform = [1e-6, 1e-2] }

    [[model]]
    name = "mlp"
    arch = "mlp"
    search = { space = "lr_wd", trials = 8, sampler = "sobol", seed = 0 }

Distributions: `log_uniform = [lo, hi]`, `uniform = [lo, hi]`, `int = [lo, hi]` (both ends
included), `choice = [a, b, ...]`. The points depend only on the space (its keys, in order, and
their distributions), the sampler, the seed and `trials`, never on the family: families that
search the same space get the same points. Floats are rounded to 3 significant digits, so the
name of a point (`mlp[trial=3,lr=0.0123,weight_decay=2.1e-05]`) is the value it trains with.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from compare.errors import Problem, did_you_mean, shown

SAMPLERS = ("sobol", "random")
DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
SEARCH_KEYS = ("space", "trials", "sampler", "seed")
DIGITS = 3  # significant digits a sampled float keeps
# One search's points are each a model the plan builds and the dry run probes: 1,000 plan in
# seconds on a laptop, 10,000 took minutes before anything trained (issue 36). docs/tuning.md.
MAX_TRIALS = 1_000


def parse(spec: Any, spaces: dict, where: str, source: str, problems: list[Problem]) -> dict | None:
    """`search = {...}` of one [[model]] -> {"sampler", "trials", "seed", "space": {key: dist}}
    with the named space filled in, or None (its problems reported)."""
    if not isinstance(spec, dict):
        problems.append(Problem(source, where, f'expected a table like {{ space = "lr_wd", trials = 8, sampler = "sobol" }}, got {shown(spec)}'))
        return None
    ok = True
    for key in spec:
        if key not in SEARCH_KEYS:
            problems.append(Problem(source, f"{where}.{key}", f"unknown key{did_you_mean(key, list(SEARCH_KEYS))} (one of {', '.join(SEARCH_KEYS)})"))
            ok = False
    trials, sampler, seed = spec.get("trials"), spec.get("sampler", "sobol"), spec.get("seed", 0)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        problems.append(Problem(source, f"{where}.trials", f"expected a whole number of trials from 1 to {MAX_TRIALS:,}, got {shown(trials)}"))
        ok = False
    if sampler not in SAMPLERS:
        problems.append(Problem(source, f"{where}.sampler", f"expected one of {', '.join(SAMPLERS)}{did_you_mean(str(sampler), list(SAMPLERS))}, got {shown(sampler)}"))
        ok = False
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(Problem(source, f"{where}.seed", f"expected a non-negative integer, got {shown(seed)}"))
        ok = False
    space = spec.get("space")
    if isinstance(space, str):
        if space not in spaces:
            problems.append(Problem(source, f"{where}.space", f"no [spaces.{space}] table{did_you_mean(space, list(spaces))}"))
            return None
        dims = check_space(spaces[space], f"spaces.{space}", source, [])  # its problems: reported once, by validate
    else:
        dims = check_space(space, f"{where}.space", source, problems)
    if dims is None or not ok:
        return None
    return {"sampler": sampler, "trials": trials, "seed": seed, "space": dims} | ({"space_name": space} if isinstance(space, str) else {})


def check_space(space: Any, where: str, source: str, problems: list[Problem]) -> dict | None:
    """A space: {dotted key: {distribution = [...]}}, every problem reported."""
    if not isinstance(space, dict) or not space:
        problems.append(Problem(source, where, f'expected a table like {{ "optimizer.lr" = {{ log_uniform = [1e-4, 1e-1] }} }}, got {shown(space)}'))
        return None
    ok = True
    for key, dist in space.items():
        at = f"{where}.{key}"
        if key.split(".")[0] in ("name", "sweep", "search", "sweep_values", "family"):
            problems.append(Problem(source, at, f"{key} cannot be searched"))
            ok = False
        elif not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            problems.append(Problem(source, at, f"expected one distribution like {{ log_uniform = [1e-4, 1e-1] }} (one of {', '.join(DISTRIBUTIONS)}), got {shown(dist)}"))
            ok = False
        else:
            kind, bounds = next(iter(dist.items()))
            message = _check_bounds(kind, bounds)
            if message:
                problems.append(Problem(source, f"{at}.{kind}", message))
                ok = False
    return dict(space) if ok else None


def _check_bounds(kind: str, bounds: Any) -> str | None:
    if kind == "choice":
        return None if isinstance(bounds, list) and bounds else f"expected a non-empty array of values, got {shown(bounds)}"
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
    if not numbers:
        return f"expected [low, high], two finite numbers, got {shown(bounds)}"
    lo, hi = bounds
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        return f"expected two integers [low, high], got {shown(bounds)}"
    if lo > hi or (lo == hi and kind != "int"):
        return f"low must be below high, got {shown(bounds)}"
    if kind == "log_uniform" and lo <= 0:
        return f"a log-uniform range must be positive, got {shown(bounds)}"
    return None


def sample(search: dict) -> list[dict[str, Any]]:
    """The search's points, one {dotted key: value} per trial, in trial order."""
    dims = list(search["space"].items())
    unit = _unit_points(search["sampler"], len(dims), search["trials"], search["seed"])
    return [{key: _value(dist, u) for (key, dist), u in zip(dims, row)} for row in unit]


def _unit_points(sampler: str, d: int, n: int, seed: int) -> np.ndarray:
    """[n, d] points in the unit cube."""
    if sampler == "random":
        return np.random.default_rng(seed).random((n, d))
    from scipy.stats import qmc  # noqa: PLC0415 - scipy's import costs a second; grids never need it

    with warnings.catch_warnings():  # Sobol balance is best at powers of 2; any n is still a valid design
        warnings.simplefilter("ignore", UserWarning)
        return qmc.Sobol(d, scramble=True, seed=seed).random(n)


def _value(dist: dict, u: float) -> Any:
    kind, bounds = next(iter(dist.items()))
    if kind == "choice":
        return bounds[min(int(u * len(bounds)), len(bounds) - 1)]
    lo, hi = bounds
    if kind == "int":
        return min(lo + int(u * (hi - lo + 1)), hi)
    x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if kind == "log_uniform" else lo + u * (hi - lo)
    return min(max(_round(x), lo), hi)


def _round(x: float) -> float:
    """x to DIGITS significant digits (0.012345 -> 0.0123), as the float that prints that way."""
    return float(f"{x:.{DIGITS}g}")


def family_lines(families: dict[str, dict], members: dict[str, list[str]]) -> list[str]:
    """The dry-run plan's lines: each family's search space and budget, then a warning where the
    budgets differ (the comparison favours the family with more trials)."""
    lines = [f"{name}: {describe(families[name]) if name in families else 'one hand-written configuration'}" for name in members]
    counts = {name: len(models) for name, models in members.items()}
    if len(set(counts.values())) > 1:
        most, least = max(counts, key=counts.get), min(counts, key=counts.get)
        lines.append(f"warning: unequal budgets: {most} has {counts[most]} trials, {least} has {counts[least]}: the comparison favours the families with more (docs/tuning.md)")
    return lines


def describe(search: dict) -> str:
    """One line for the plan: `8 sobol trials (seed 0) of lr_wd: optimizer.lr log-uniform 0.003..0.5, ...`."""
    if search.get("sampler") == "grid":
        return f"{search['trials']}-point grid: " + "; ".join(f"{key} {{{', '.join(map(str, d['choice']))}}}" for key, d in search["space"].items())
    parts = []
    for key, dist in search["space"].items():
        kind, bounds = next(iter(dist.items()))
        parts.append(f"{key} {kind.replace('_', '-')} " + ("{" + ", ".join(map(str, bounds)) + "}" if kind == "choice" else f"{bounds[0]}..{bounds[1]}"))
    name = f" of {search['space_name']}" if "space_name" in search else ""
    return f"{search['trials']} {search['sampler']} trials (seed {search['seed']}){name}: " + "; ".join(parts)

"""A loss per head (docs/metrics.md, "Several heads"): `[loss.digit] name = "CrossEntropyLoss"`,
`[loss.ink] name = "MSELoss", weight = 0.5`. The shared loss is then ONE object, the weighted
sum of the heads' losses (each built as `[loss]` builds one); evaluation also keeps each head's
loss per sample, so `<head>/loss` is a metric with its own interval and paired test.

In a config the head tables are stored as `[loss] name = "heads"` with the tables under
`loss.args` (the form a saved config.toml has); `[loss.<head>]` is the short form of the same.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from compare.errors import DataError, Problem, shown
from compare.metrics.heads import items

NAME = "heads"  # loss.name of a loss per head
KEYS = ("name", "args", "weight")  # a head's table


def normalise(raw: Any) -> Any:
    """`[loss.<head>]` tables -> `{name = "heads", args = {<head> = {...}}}`; anything else as it is."""
    if not isinstance(raw, dict):
        return raw
    heads = {k: v for k, v in raw.items() if k not in ("name", "args") and isinstance(v, dict)}
    if not heads:
        return raw
    return {k: v for k, v in raw.items() if k not in heads} | {"name": raw.get("name", NAME), "args": {**raw.get("args", {}), **heads}}


def check(args: Any, file: str, check_one: Callable[[Any, dict, str], list[Problem]]) -> list[Problem]:
    """Every head's table; `check_one(name, args, key)` checks one loss as `[loss]` is checked."""
    if not isinstance(args, dict) or not args:
        return [Problem(file, "loss", f"a loss per head is one [loss.<head>] table per head (name, args, weight); got {shown(args)}")]
    problems = []
    for head, table in args.items():
        key = f"loss.{head}"
        if not isinstance(table, dict):
            problems.append(Problem(file, key, f"expected a table (name, args, weight), got {shown(table)}"))
            continue
        problems += [Problem(file, f"{key}.{k}", f"unknown key (a head's loss takes {', '.join(KEYS)})") for k in table if k not in KEYS]
        weight = table.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            problems.append(Problem(file, f"{key}.weight", f"expected a number >= 0, got {shown(weight)}"))
        if not isinstance(table.get("args", {}), dict):
            problems.append(Problem(file, f"{key}.args", f"expected a table, got {shown(table.get('args'))}"))
        elif "name" not in table:
            problems.append(Problem(file, f"{key}.name", "missing required key"))
        else:
            problems += check_one(table["name"], table.get("args", {}), key)
    return problems


class HeadsLoss(nn.Module):
    """The weighted sum of each head's loss on that head's output and target."""

    def __init__(self, parts: dict[str, Callable], weights: dict[str, float]):
        super().__init__()
        modules = all(isinstance(p, nn.Module) for p in parts.values())
        self.parts = nn.ModuleDict(parts) if modules else parts  # modules: moved with the loss (a class weight)
        self.weights = dict(weights)

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        outputs, targets = items(output), items(target)
        missing = [h for h in self.parts if h not in outputs or h not in targets]
        if missing:
            raise DataError(f"a loss per head ([loss.<head>]) for {', '.join(self.parts)}: the model's output has {', '.join(outputs) or 'no heads'}, "
                            f"the targets have {', '.join(targets) or 'no heads'} (no {', '.join(missing)})")
        values = {h: part(outputs[h], targets[h]) for h, part in self.parts.items()}
        total = sum(self.weights[h] * v for h, v in values.items())
        # each head's value per sample rides on the total for the step log (train_<head>/loss)
        total.heads = {h: v.detach() / (len(targets[h]) if getattr(self.parts[h], "reduction", None) == "sum" else 1) for h, v in values.items()}
        return total

    def per_sample(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        """Each head's loss per sample (evaluation keeps it as `<head>/loss`): the loss with
        reduction "none", averaged over any dimensions past the batch; a loss without a
        `reduction` gives its batch value to every sample of the batch."""
        outputs, targets = items(output), items(target)
        out = {}
        for h, part in self.parts.items():
            o, t = outputs[h], targets[h]
            if isinstance(part, nn.Module) and getattr(part, "reduction", None) in ("mean", "sum"):
                each = _unreduced(part)(o, t).detach().float()
                each = each.reshape(len(each), -1).mean(dim=1) if each.ndim else each.expand(len(t))
            else:
                each = part(o, t).detach().float().expand(len(t))
            out[h] = each
        return out


def _unreduced(part: nn.Module) -> nn.Module:
    none = copy.copy(part)  # shares the weights and buffers; only `reduction` differs
    none.reduction = "none"
    return none


@dataclass(frozen=True)
class Part:
    """One head's loss, as a `[loss]` table: what `build_loss` reads."""

    name: Any
    args: dict


def build(args: dict, build_one: Callable[[Part], Callable]) -> HeadsLoss:
    """`build_one(part)` builds one head's loss as `[loss]` builds one."""
    parts = {h: build_one(Part(t["name"], t.get("args", {}))) for h, t in args.items()}
    return HeadsLoss(parts, {h: float(t.get("weight", 1.0)) for h, t in args.items()})

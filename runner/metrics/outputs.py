"""What metrics read from a model's output. The shared loss always gets the output exactly as
the model returned it; metrics take one tensor of it by a documented rule (docs/metrics.md):

- a tensor: itself;
- `[report] output = "<key>"` (or a [[model]]'s own `output`, for that model): that key of a
  dict (or attribute of an output object), or that position of a tuple when the key is a number;
- a dict or a Hugging Face `ModelOutput` (a dict with attributes): its `logits`, else its first tensor;
- a tuple or list (auxiliary logits, as in Inception or GoogLeNet): its first element.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from compare.errors import UserCodeError, did_you_mean


def prediction(output: Any, key: str | None = None) -> torch.Tensor:
    """The tensor metrics read from `output` (see the module docstring)."""
    if isinstance(output, torch.Tensor) and key is None:
        return output
    if key is not None:
        return _tensor(_by_key(output, key), f"output = {key!r}")
    if isinstance(output, Mapping):
        if "logits" in output:
            return _tensor(output["logits"], "its 'logits'")
        first = next((v for v in output.values() if isinstance(v, torch.Tensor)), None)
        return _tensor(first, "its first tensor value")
    if hasattr(output, "logits"):
        return _tensor(output.logits, "its .logits")
    if isinstance(output, (tuple, list)) and output:
        return prediction(output[0])
    raise UserCodeError(f"the model returned {type(output).__name__}: metrics need a tensor, a tuple/list whose first element is one, or a dict with 'logits' (or set [report] output)")


class OutputKeyError(UserCodeError):
    """`[report] output` names nothing the model's output has: a config problem (the build
    reports it against `report.output`), not the model's forward raising."""


def _by_key(output: Any, key: str) -> Any:
    if isinstance(output, torch.Tensor):  # before attributes: `logit` would find Tensor.logit
        raise OutputKeyError(f"{key!r}: the model returns a plain tensor, which has no keys (remove the setting)")
    if isinstance(output, Mapping):
        if key in output:
            return output[key]
        names = [str(k) for k in output]
    elif isinstance(output, (tuple, list)):
        if key.lstrip("-").isdigit() and -len(output) <= int(key) < len(output):
            return output[int(key)]
        raise OutputKeyError(f"{key!r}: the model's output is a {type(output).__name__} of {len(output)}: use a position 0..{len(output) - 1}")
    else:
        value = getattr(output, key, None)
        if value is not None and not callable(value):  # an attribute (a field, a property), never a method
            return value
        names = [k for k, v in getattr(output, "__dict__", {}).items() if not k.startswith("_") and not callable(v)]
    has = f"it has: {', '.join(names)}" if names else f"it has no keys or attributes ({type(output).__name__})"
    raise OutputKeyError(f"the model's output has no key {key!r}; {has}{did_you_mean(key, names)}")


def _tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise UserCodeError(f"the model's output: {what} is {type(value).__name__}, not a tensor (set [report] output to the key of its predictions)")
    return value


def extra_outputs(output: Any) -> int:
    """How many tensors the output holds beside the one metrics read (auxiliary logits, hidden
    states). The shared loss gets them all, so its value may hold terms other models' losses
    lack: the leaderboard says so, and breaks ties on a metric of the prediction instead."""

    def count(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return 1
        if isinstance(value, Mapping):
            return sum(count(v) for v in value.values())
        if isinstance(value, (tuple, list)):
            return sum(count(v) for v in value)
        return 1 if hasattr(value, "logits") else 0  # an output object of another kind: its prediction only

    return max(0, count(output) - 1)


def shape_of(output: Any, key: str | None = None) -> tuple[int, ...]:
    """The prediction's shape, for the plan and the probes."""
    return tuple(prediction(output, key).shape)

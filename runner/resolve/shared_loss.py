"""A loss object is shared by every model (DESIGN.md), which is fair only while it keeps no
state between calls. This probes a copy of it and says what would leak from model to model."""
from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
from torch import nn

from compare.engine.rng import preserved_rng


def shared_state(loss: Callable, num_classes: int) -> list[str]:
    """What makes a shared loss unfair: trainable parameters, or state that two identical calls
    change (probed on a copy, with class-index targets; a loss that needs others is not probed)."""
    found = []
    if isinstance(loss, nn.Module) and any(True for _ in loss.parameters()):
        found.append("it has trainable parameters, which no model's optimizer updates")
    try:
        probe = copy.deepcopy(loss)
        logits = torch.randn(4, max(num_classes, 2), generator=torch.Generator().manual_seed(0))
        targets = torch.arange(4) % max(num_classes, 2)
        before = _state(probe)
        with torch.no_grad(), preserved_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a regression loss on class targets warns of broadcasting: only state is probed
            probe(logits, targets)
            probe(logits, targets)
        after = _state(probe)
    except Exception:  # noqa: BLE001 - a loss that cannot be probed this way is simply not probed
        return found
    changed = sorted(k for k in before.keys() | after.keys() if not _same(before.get(k), after.get(k)))
    if changed:
        found.append(f"it changes {', '.join(changed)} when called, so each model's calls change what the next model gets")
    return found


def _state(obj) -> dict:
    """Buffers and public attributes (of every submodule), copied."""
    state = {f"buffer {k}": v.detach().clone() for k, v in obj.named_buffers()} if isinstance(obj, nn.Module) else {}
    owners = obj.named_modules() if isinstance(obj, nn.Module) else [("", obj)]
    for prefix, owner in owners:
        for key, value in vars(owner).items() if hasattr(owner, "__dict__") else ():
            if key.startswith("_") or key == "training":
                continue
            name = f"attribute {prefix + '.' if prefix else ''}{key}"
            try:
                state[name] = copy.deepcopy(value)
            except Exception:  # noqa: BLE001 - not copyable: compare what it prints
                state[name] = repr(value)
    return state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return repr(a) == repr(b)

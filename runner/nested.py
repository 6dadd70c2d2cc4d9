"""A batch is any nested structure of tensors: THE place that walks one.

Inputs and targets may be a tensor, or a tuple, list, dict, NamedTuple or dataclass of them
(nested to any depth), as torch's `default_collate` makes them from samples of that shape.
Everything that moves, slices, measures or describes a batch goes through these functions, so
a new kind of structure is taught in one place. Non-tensor leaves (strings, numbers, None)
pass through unchanged.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import torch


def is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def map_tensors(fn: Callable[[torch.Tensor], Any], tree: Any) -> Any:
    """`tree` with every tensor leaf replaced by `fn(leaf)`, its structure (and types) kept."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        out = {k: map_tensors(fn, v) for k, v in tree.items()}
        return out if type(tree) is dict else _rebuilt(type(tree), out)
    if is_namedtuple(tree):
        return type(tree)(*(map_tensors(fn, v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(map_tensors(fn, v) for v in tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(tree, **{f.name: map_tensors(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree) if f.init})
    return tree


def _rebuilt(kind: type, items: dict) -> Any:
    try:  # an OrderedDict, a BatchEncoding-like mapping: its own type again
        return kind(items)
    except TypeError:  # a mapping that cannot be built from a dict (defaultdict): a plain dict
        return items


def tensors(tree: Any) -> list[torch.Tensor]:
    """Every tensor leaf, in a fixed order (dict order, then position)."""
    found: list[torch.Tensor] = []
    map_tensors(lambda t: found.append(t), tree)
    return found


def to(tree: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """The structure on `device` (a tensor already there is not copied)."""
    return map_tensors(lambda t: t.to(device, non_blocking=non_blocking), tree)


def batch_size(tree: Any) -> int:
    """How many samples a batch holds: the first dimension of its first tensor leaf."""
    found = tensors(tree)
    if not found:
        raise TypeError(f"a batch of {type(tree).__name__} holds no tensor")
    first = found[0]
    return len(first) if first.ndim else 1


def take(tree: Any, index: Any) -> Any:
    """Samples `index` (an int, slice or index tensor) of every tensor leaf."""
    return map_tensors(lambda t: t[index], tree)


def first(tree: Any) -> Any:
    """The first sample of a batch, every leaf without its batch dimension."""
    return map_tensors(lambda t: t[0] if t.ndim else t, tree)


def cat(trees: list[Any]) -> Any:
    """Batches joined along their first dimension (all of one structure)."""
    leaves = [tensors(t) for t in trees]
    joined = iter([torch.cat(column) for column in zip(*leaves)])
    return map_tensors(lambda _: next(joined), trees[0])


def shape_of(tree: Any) -> str:
    """A structure's shapes for a message: `[64, 3, 32, 32]`, or `{image: [64, 3, 32, 32], meta: [64, 5]}`."""
    if isinstance(tree, torch.Tensor):
        return str(list(tree.shape))
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k}: {shape_of(v)}" for k, v in tree.items()) + "}"
    if is_namedtuple(tree):
        return f"{type(tree).__name__}(" + ", ".join(f"{k}={shape_of(v)}" for k, v in zip(tree._fields, tree)) + ")"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(shape_of(v) for v in tree)
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return f"{type(tree).__name__}(" + ", ".join(f"{f.name}={shape_of(getattr(tree, f.name))}" for f in dataclasses.fields(tree)) + ")"
    return type(tree).__name__


def is_tensor(tree: Any) -> bool:
    return isinstance(tree, torch.Tensor)

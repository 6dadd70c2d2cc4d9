"""Several heads: targets and outputs that are a dict (or a tuple) of the same keys.

Each key is a head (a tuple's positions are heads "0", "1", ...). A head's task is inferred
from its own target and prediction as for a single head (runner/metrics/tasks.py `infer_heads`),
evaluation keeps its per-sample statistics under `<head>/<stat>` (with `<head>/target`), and
its metrics are named `<head>/<metric>` (`digit/acc`, `ink/rmse`): the built-in metric, its
direction and its paired-test family, read on that head's statistics (docs/metrics.md,
"Several heads"). Below `tasks` and `builtin`, which dispatch a heads task here and hand in
what is theirs (the per-head task inference, statistics and metrics).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Callable

import torch

from compare.errors import DataError, ReportError, did_you_mean
from compare.metrics.outputs import shape_of

KIND = "heads"
SEP = "/"  # <head>/<metric>, <head>/<stat>
Heads = tuple[tuple[str, str, int | None, bool], ...]  # (head, kind, width, loss kept) per head: a heads task's `width`


def is_structured(target: Any) -> bool:
    """A target of several heads: a dict, a tuple or a list (not one tensor, not a number)."""
    return isinstance(target, (Mapping, tuple, list))


def items(tree: Any) -> dict[str, Any]:
    """A structure's heads by name: a dict's keys, a NamedTuple's fields, a tuple's positions."""
    if isinstance(tree, Mapping):
        return {str(k): v for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return dict(zip(tree._fields, tree))
    if isinstance(tree, (tuple, list)):
        return {str(i): v for i, v in enumerate(tree)}
    return {}


class Shape(tuple):
    """One sample's prediction shape (as before), and each head's where the model's output is a
    dict or tuple of tensors (`heads`; None otherwise)."""

    heads: dict[str, tuple[int, ...]] | None = None

    @classmethod
    def of(cls, shape: tuple[int, ...], heads: dict | None) -> "Shape":
        out = cls(shape)
        out.heads = heads
        return out


def sample_shape(output: Any, key: str | None = None) -> Shape:
    """One probe batch's output -> one sample's prediction shape, with every head's."""
    shape = Shape(shape_of(output, key)[1:])
    found = {k: tuple(v.shape[1:]) for k, v in items(output).items() if isinstance(v, torch.Tensor)}
    if key is None and found and not hasattr(output, "logits"):
        shape.heads = found
    return shape


def parts(target: Any, shape: Any, loss_fn: Any, infer_one: Callable) -> list[tuple[str, Any]] | None:
    """(head, task) for each head of a structured target against the output's heads
    (`shape.heads`): `infer_one(target, shape, loss)` with that head's target, prediction shape
    and loss (its own `[loss.<head>]`, else the shared one). None: the model returns one tensor
    ("other": the user's loss unpacks the targets)."""
    targets = items(target)
    outputs = getattr(shape, "heads", None)
    if not outputs:
        return None
    missing = [k for k in targets if k not in outputs]
    if missing:
        raise DataError(f"the targets have heads {', '.join(targets)} but the model's output has {', '.join(outputs)} (no {', '.join(missing)}): "
                        "return one output per target head, under the same keys (docs/metrics.md, \"Several heads\")")
    found = []
    for name, value in targets.items():
        if is_structured(value):
            raise DataError(f"head {name!r}: its target is a {type(value).__name__}; a head's target is one tensor (or number)")
        found.append((name, infer_one(value, outputs[name], dict(getattr(loss_fn, "parts", {})).get(name, loss_fn))))
    return found


def sample_stats(task: Any, output: Any, y: Any, per_head: Callable) -> dict[str, torch.Tensor]:
    """Each head's per-sample statistics (`per_head(head_task, pred, target)`) and target, under
    `<head>/`; `target` is a placeholder (each head keeps its own) so that every split's kept
    statistics have one length."""
    outputs, targets = items(output), items(y)
    out: dict[str, torch.Tensor] = {}
    for name, head in task.heads:
        target = torch.as_tensor(targets[name])
        out |= {f"{name}{SEP}{k}": v for k, v in per_head(head, outputs[name], target).items()}
        out.setdefault(f"{name}{SEP}target", target)  # a dense head keeps its own placeholder, not the masks
    out["target"] = kept_target(y)
    return out


def kept_target(y: Any) -> torch.Tensor:
    """What evaluation keeps as a batch's `target`: the targets, or for several heads a
    placeholder of zeros (each head keeps its own under `<head>/target`)."""
    if isinstance(y, torch.Tensor):
        return y
    first = next(iter(items(y).values()))
    return torch.zeros(len(first), dtype=torch.uint8, device=first.device)


def _heads(width: Any) -> Heads:
    """A heads task's width as saved (JSON lists) or made (tuples)."""
    return tuple((str(h), str(kind), None if w is None else int(w), bool(loss and loss[0])) for h, kind, w, *loss in width or ())


def head_kept(kept: Any, head: str, width: int | None) -> Any:
    """One head's statistics and targets (a builtin.Kept), as a single-head task keeps them."""
    prefix = head + SEP
    stats = {k[len(prefix):]: v for k, v in kept.stats.items() if k.startswith(prefix) and k != prefix + "target"}
    return type(kept)(stats, kept.stats[prefix + "target"], width)


def on_head(metric: Any, head: str, width: int | None) -> Any:
    """`metric` read on one head: named `<head>/<metric>`, same direction, family and bounds."""
    sub = lambda k: head_kept(k, head, width)  # noqa: E731
    m = metric
    return replace(
        m, name=f"{head}{SEP}{m.name}", needs=tuple(f"{head}{SEP}{n}" for n in (*m.needs, "target")),
        per_sample=m.per_sample and (lambda k: m.per_sample(sub(k))),
        features=m.features and (lambda k: m.features(sub(k))),
        from_sums=m.from_sums and (lambda s, k: m.from_sums(s, sub(k))),
        weighted=m.weighted and (lambda k, w: m.weighted(sub(k), w)),
    )


def metrics_for(width: Any, metrics_of: Callable, loss: Any) -> dict[str, Any]:
    """Each head's metrics (`metrics_of(kind, width)`), and `loss` as `<head>/loss` where the
    loss is given per head."""
    heads = _heads(width)
    found = {f"{h}{SEP}{n}": on_head(m, h, w) for h, kind, w, _ in heads for n, m in metrics_of(kind, w).items()}
    return found | {f"{h}{SEP}loss": on_head(loss, h, w) for h, _, w, kept in heads if kept}


def defaults(width: Any, defaults_of: Callable) -> list[str]:
    """Every head's default metrics (`defaults_of(kind, width)`), head by head (the first
    head's first ranks), then each head's own loss where the loss is given per head."""
    heads = _heads(width)
    return [f"{h}{SEP}{n}" for h, kind, w, _ in heads for n in defaults_of(kind, w)] + [f"{h}{SEP}loss" for h, _, _, kept in heads if kept]


def detached(loss: torch.Tensor) -> torch.Tensor:
    """`loss.detach()`, with each head's value where the loss is given per head (`loss.heads`)."""
    out = loss.detach()
    if hasattr(loss, "heads"):
        out.heads = loss.heads
    return out


def loss_stats(loss_fn: Any, output: Any, y: Any) -> dict[str, torch.Tensor]:
    """Each head's loss per sample, where the loss is given per head (evaluation keeps them)."""
    if not hasattr(loss_fn, "per_sample"):
        return {}
    return {f"{h}{SEP}loss": v for h, v in loss_fn.per_sample(output, y).items()}


def unknown(name: str, width: Any, known: list[str]) -> ReportError:
    """A metric a heads task does not have: name the heads, and the head's metrics."""
    heads = [h for h, *_ in _heads(width)]
    head, _, bare = name.rpartition(SEP)
    if head not in heads:
        where = f"no head {head!r}" if head else "a metric of several heads is named <head>/<metric>"
        return ReportError(f"metric {name!r}: {where}; the heads: {', '.join(heads)} (for example {known[0] if known else heads[0] + '/loss'}){did_you_mean(name, known)}")
    mine = [k for k in known if k.startswith(head + SEP)]
    return ReportError(f"metric {name!r}: head {head!r} has no metric {bare!r}{did_you_mean(name, mine)} (its metrics: {', '.join(mine) or 'none'})")


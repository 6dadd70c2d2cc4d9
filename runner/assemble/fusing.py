"""`experiment.fuse`: which of one seed's models train as fused groups (runner/engine/fused.py).

    off   never (the default; the plain-loop contract holds bitwise)
    on    every group of models that can be fused and whose fused step runs
    auto  those groups whose fused step measured faster than their models one by one

A group is models with the same architecture reference, the same args, the same device and
(after building) the same parameter and buffer layout. Models that cannot join one fall back
to plain slots, each with a `warning:` line saying why. Every candidate group first runs one
fused step on copies of its models, on the first batch of the train split, under a forked
random state, so no model's weights, buffers or random streams change; with `auto` a few
interleaved steps fused and one by one are timed the same way. The decision is made once per
run (the first seed's build) and recorded: later seeds and a resume form the same groups.
"""
from __future__ import annotations

import copy
import json
import statistics
import warnings

import torch

from compare.resolve import components
from compare.config.schema import Config
from compare.data.loaders import first_batches
from compare.errors import CompareWarning, describe, one_line
from compare.engine.fused import FusedGroup
from compare.config.seeds import derive_seed
from compare.engine.rng import RngStream, preserved_rng
from compare.engine.slot import Slot, SlotParts
from compare.engine.timing import wall_seconds

TIMED_STEPS = 3  # per contender, interleaved, after one warm-up step each


def warn(message: str) -> None:
    warnings.warn(message, CompareWarning, stacklevel=3)


def fuse_slots(cfg: Config, seed: int, data, slots: list[Slot], loss_fn=None, decided: dict[str, str] | None = None) -> list[Slot]:
    """One seed's slots with fused groups formed: members replace their plain slots, in config
    order. `decided` (model name -> group label, "" = unfused) replays an earlier decision."""
    if cfg.experiment.fuse == "off":
        return slots
    groups = groups_from(decided, slots) if decided is not None else decide(cfg, seed, data, slots, loss_fn)
    by_name = {s.name: s for s in slots}
    for s in slots:
        s.info["fused"] = ""  # the models.csv / leaderboard column: the group label, or empty
    for label, members in groups.items():
        names = [s.name for s in members]
        rng = RngStream(derive_seed(seed, "<fused>/" + ",".join(names)), members[0].device)
        group = FusedGroup(label, members, rng)
        for member in group.members:
            member.info["fused"] = label
            by_name[member.name] = member
    return [by_name[s.name] for s in slots]


def fused_labels(slots: list[Slot]) -> dict[str, str] | None:
    """The decision to replay (None when fuse is off)."""
    if not any("fused" in s.info for s in slots):
        return None
    return {s.name: s.info.get("fused", "") for s in slots}


def groups_from(decided: dict[str, str], slots: list[Slot]) -> dict[str, list[Slot]]:
    groups: dict[str, list[Slot]] = {}
    for s in slots:
        if decided.get(s.name):
            groups.setdefault(decided[s.name], []).append(s)
    return groups


# ------------------------------------------------------------ grouping


def candidate_groups(cfg: Config, slots: list[Slot]) -> tuple[list[list[Slot]], list[str]]:
    """Groups of two or more models that could be fused, and why the others cannot."""
    e = cfg.experiment
    if str(e.precision) == "16-mixed":
        return [], ['experiment.precision = "16-mixed" needs a GradScaler per model; fused groups run "32" and "bf16-mixed"']
    if e.compile:
        return [], ["experiment.compile = true: compiled models train one by one (a fused group is one vmapped function)"]
    if e.accumulate > 1:  # a fused step steps every member's optimizer at every batch
        return [], [f"experiment.accumulate = {e.accumulate}: models that accumulate gradients train one by one"]
    if slots and slots[0].task is not None and slots[0].task.kind == "heads":  # a fused group's evaluation reads one prediction
        return [], ["several heads (runner/metrics/heads.py): such models train one by one"]
    keyed: dict[tuple, list[Slot]] = {}
    reasons = []
    for s in slots:
        m = s.config
        if m.device is not None:
            reasons.append(f"model {s.name}: model.{s.name}.device is set (models on their own devices train one by one)")
            continue
        if m.freeze or m.param_groups:  # a fused group stacks every parameter under one optimizer layout
            reasons.append(f"model {s.name}: model.{s.name}.{'freeze' if m.freeze else 'param_groups'} is set (fine-tuned models train one by one)")
            continue
        recipe = [k for k in ("clip_grad_norm", "clip_grad_value") if getattr(m, k) is not None] + (["optimizer.no_decay"] if m.optimizer.no_decay else [])
        if recipe:  # the fused step neither clips nor splits decay groups (runner/assemble/recipe.py)
            reasons.append(f"model {s.name}: model.{s.name}.{recipe[0]} is set (such models train one by one)")
            continue
        if not any(True for _ in s.model.parameters()):
            reasons.append(f"model {s.name}: has no parameters to stack")
            continue
        key = (describe(m.arch), json.dumps(m.args, sort_keys=True, default=repr), str(s.device), layout(s.model), cfg.output(m))  # a group's metrics read one output key
        keyed.setdefault(key, []).append(s)
    return [g for g in keyed.values() if len(g) > 1], reasons


def layout(model: torch.nn.Module) -> tuple:
    """What must match to stack: module class, parameter and buffer names, shapes, dtypes."""
    params = tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers())
    return type(model).__qualname__, params, buffers


# ------------------------------------------------------------ the decision


def decide(cfg: Config, seed: int, data, slots: list[Slot], loss_fn) -> dict[str, list[Slot]]:
    mode = cfg.experiment.fuse
    candidates, reasons = candidate_groups(cfg, slots)
    for reason in reasons:
        warn(f"experiment.fuse = {mode}: not fused: {reason}")
    if not candidates:
        if not reasons:
            warn(f"experiment.fuse = {mode}: no two models share architecture, args and device; nothing fused")
        return {}
    if loss_fn is None:
        with warnings.catch_warnings():  # the run builds (and warns about) its own loss object
            warnings.simplefilter("ignore")
            loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    chosen = {}
    batches = first_batches(cfg, seed, data, candidates[0][0].device, n=2)  # one device: per-model devices are not fused
    for k, members in enumerate(candidates, start=1):
        label = f"{arch_label(members[0].config.arch)}#{k}"
        names = ", ".join(s.name for s in members)
        error, fused_s, loop_s = trial(cfg, label, members, batches, loss_fn, timed=mode == "auto")
        if error is not None:
            warn(f"experiment.fuse = {mode}: not fused: {names}: the vmapped step raised {error}")
        elif mode == "on":
            chosen[label] = members
        else:
            faster = fused_s < loop_s
            verdict = f"fused as {label}" if faster else "trained one by one"
            warn(f"experiment.fuse = auto: {names}: a step took {fused_s * 1e3:.2f} ms fused, {loop_s * 1e3:.2f} ms one by one on {members[0].device}: {verdict}")
            if faster:
                chosen[label] = members
    return chosen


def arch_label(arch) -> str:
    """`mlp`, `my_model.py:Net`; a live object by its class or function name."""
    text = describe(arch)
    return text[len("<python:") : -1].rsplit(".", 1)[-1] if text.startswith("<python:") else text


def copies(slots: list[Slot]) -> list[Slot]:
    """Plain slots over deep copies of the models, with fresh optimizers of the same config."""
    out = []
    for s in slots:
        model = copy.deepcopy(s.model)
        optimizer = components.create_optimizer(s.config.optimizer.name, model.parameters(), s.config.optimizer.args)
        out.append(Slot(SlotParts(s.name, model, optimizer, RngStream(0, s.device), s.device, s.config, numerics=s.numerics, spread=s.parts.spread)))
    return out


def trial(cfg: Config, label: str, members: list[Slot], batches, loss_fn, timed: bool) -> tuple[str | None, float, float]:
    """One fused step on copies (does it run?); with `timed`, median seconds of a step fused
    and of the same step one by one. Returns (error or None, fused_s, loop_s)."""
    device = members[0].device
    with preserved_rng([device]):
        group = FusedGroup(label, copies(members), RngStream(0, device))
        x, y = batches[0]
        try:
            group.step_all(x, y, loss_fn, 0, 0, group.stacked)
        except Exception as err:  # noqa: BLE001 - the reason it falls back
            return f"{type(err).__name__}: {one_line(err)}", float("nan"), float("nan")
        if not timed:
            return None, float("nan"), float("nan")
        loop = copies(members)
        for s in loop:  # warm-up
            s.train_step(x, y, loss_fn, 0, 0)
        fused_times, loop_times = [], []
        for step in range(TIMED_STEPS):
            x, y = batches[step % len(batches)]
            fused_times.append(wall_seconds(lambda: group.step_all(x, y, loss_fn, 0, step, group.stacked), device))
            loop_times.append(wall_seconds(lambda: [s.train_step(x, y, loss_fn, 0, step) for s in loop], device))
    return None, statistics.median(fused_times), statistics.median(loop_times)


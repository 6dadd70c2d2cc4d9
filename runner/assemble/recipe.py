"""The training recipe beyond an optimizer's own arguments (docs/configuration.md, "The
training recipe"): the config keys, their checks, and what the slot factory builds from them.

- `[model.optimizer] no_decay = "bias_and_norm"`: biases and the weights of normalization layers
  get weight_decay = 0 (the AdamW recipe of BERT and timm), each group split in two, so it
  composes with `freeze` and `param_groups` (runner/assemble/finetune.py).
- `[model.scheduler] warmup_steps` / `warmup_epochs`: torch's LinearLR, then the scheduler, in a
  SequentialLR (its state_dict holds both: a checkpoint resumes mid-warmup). `name = "linear"` /
  `"cosine"`: LinearLR to 0 / CosineAnnealingLR over the rest of the run, its length counted here.
- `[experiment] accumulate`, `[[model]] clip_grad_norm` / `clip_grad_value`: checked here, applied
  each step by runner/engine/recipe.py.
"""
from __future__ import annotations

import inspect
import math
import re
import typing
from typing import Any

import torch
from torch import nn

from compare.config.schema import Config, ModelConfig, OptimizerConfig, SchedulerConfig
from compare.engine.recipe import StepRecipe
from compare.errors import ConfigError, Problem, shown
from compare.resolve import components
from compare.resolve.arguments import describe_type, matches

SPEC_KEYS = {OptimizerConfig: ("no_decay",), SchedulerConfig: ("warmup_steps", "warmup_epochs", "warmup_start_factor")}
KEYS = tuple(k for keys in SPEC_KEYS.values() for k in keys)  # compare's keys in an optimizer or scheduler table: not the class's arguments
NO_DECAY = ("bias_and_norm",)
WARMUP_START = 0.01  # the lr's first factor in a warmup (torchvision's references/classification default)
# name -> (torch scheduler, the argument the run's length fills, its defaults)
SHORTHANDS = {"linear": ("LinearLR", "total_iters", {"start_factor": 1.0, "end_factor": 0.0}), "cosine": ("CosineAnnealingLR", "T_max", {})}
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)
NORM_NAME = re.compile(r"Norm(\d+d)?$")  # a model's own norm class: LlamaRMSNorm, T5LayerNorm, LayerNorm2d
MAX_ACCUMULATE = 2**31 - 1


def spec_keys(raw: dict, cls: type, where: str, source: str, problems: list[Problem]) -> dict:
    """The recipe keys of one optimizer or scheduler table, type-checked (the rest are the class's arguments)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for key in KEYS:
        if key not in raw:
            continue
        if key not in SPEC_KEYS[cls]:
            home = "[model.scheduler]" if cls is OptimizerConfig else "[model.optimizer]"
            problems.append(Problem(source, f"{where}.{key}", f"belongs in the {home} table"))
        elif matches(raw[key], hints[key]):
            out[key] = raw[key]
        else:
            problems.append(Problem(source, f"{where}.{key}", f"expected {describe_type(hints[key])}, got {shown(raw[key])}"))
    return out


# ------------------------------------------------------------ the config check (nothing built)


def check_experiment(cfg: Config) -> list[Problem]:
    k = cfg.experiment.accumulate
    if not 1 <= k <= MAX_ACCUMULATE:
        return [Problem(cfg.source, "experiment.accumulate", f"expected a number of batches per optimizer step >= 1, got {shown(k)}")]
    return []


def check_model(m: ModelConfig, src: str, where: str, epochs: int) -> list[Problem]:
    problems = []
    no_decay = m.optimizer.no_decay
    if no_decay is not None and no_decay not in NO_DECAY:
        problems.append(Problem(src, f"{where}.optimizer.no_decay", f"expected 'bias_and_norm' (biases and normalization weights get weight_decay = 0), got {shown(no_decay)}"))
    elif no_decay is not None and not _takes_weight_decay(m.optimizer.name):
        problems.append(Problem(src, f"{where}.optimizer.no_decay", f"{m.optimizer.name} takes no weight_decay: there is no decay to skip"))
    for key in ("clip_grad_norm", "clip_grad_value"):
        value = getattr(m, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(Problem(src, f"{where}.{key}", f"expected a positive finite number, got {shown(value)}"))
    if m.scheduler is not None:
        problems += _check_scheduler(m, src, f"{where}.scheduler", epochs)
    return problems


def _takes_weight_decay(name: str) -> bool:
    cls = getattr(torch.optim, name, None)
    return not isinstance(cls, type) or "weight_decay" in inspect.signature(cls).parameters  # an unknown name is reported at the optimizer


def _check_scheduler(m: ModelConfig, src: str, key: str, epochs: int) -> list[Problem]:
    s, problems = m.scheduler, []
    if s.name in SHORTHANDS:
        name, length, defaults = SHORTHANDS[s.name]
        if length in s.args:
            problems.append(Problem(src, f"{key}.{length}", f"name = {s.name!r} sets {length} from the run's length; leave it out (or name = {name!r} to give it)"))
        problems += components.check_scheduler(name, defaults | {length: 1} | s.args, m.optimizer, src, key)
    else:
        problems += components.check_scheduler(s.name, s.args, m.optimizer, src, key)
    if s.warmup_steps is not None and s.warmup_epochs is not None:
        problems.append(Problem(src, f"{key}.warmup_epochs", "give warmup_steps or warmup_epochs, not both"))
    for name, interval in (("warmup_steps", "step"), ("warmup_epochs", "epoch")):
        value = getattr(s, name)
        if value is None:
            continue
        other = "warmup_epochs" if interval == "step" else "warmup_steps"
        if value < 1:
            problems.append(Problem(src, f"{key}.{name}", f"expected >= 1, got {value}"))
        elif s.interval != interval:
            problems.append(Problem(src, f"{key}.{name}", f"counts {'optimizer steps' if interval == 'step' else 'epochs'}, but the scheduler steps every {s.interval}: set interval = {interval!r} (or use {other})"))
        elif s.name == "ReduceLROnPlateau":
            problems.append(Problem(src, f"{key}.{name}", "cannot come before ReduceLROnPlateau (torch's SequentialLR does not chain it)"))
        elif interval == "epoch" and s.name in SHORTHANDS and value >= epochs:
            problems.append(Problem(src, f"{key}.{name}", f"{value} leaves no epoch of experiment.epochs = {epochs} for the {s.name} decay"))
    start = s.warmup_start_factor
    if start is not None and s.warmup_steps is None and s.warmup_epochs is None:
        problems.append(Problem(src, f"{key}.warmup_start_factor", "there is no warmup to start: set warmup_steps or warmup_epochs"))
    elif start is not None and not 0 < start <= 1:
        problems.append(Problem(src, f"{key}.warmup_start_factor", f"expected 0 < factor <= 1 (the lr starts at factor x lr), got {shown(start)}"))
    return problems


# ------------------------------------------------------------ at build time


def batches_per_epoch(train_size: int | None, batch_size: int) -> int:
    return -(-train_size // batch_size) if train_size else 0


def step_recipe(cfg: Config, m: ModelConfig, train_size: int | None) -> StepRecipe:
    """What the slot applies at each step (runner/engine/recipe.py)."""
    b = cfg.data.batch_size
    return StepRecipe(cfg.experiment.accumulate, b, batches_per_epoch(train_size, b), m.clip_grad_norm, m.clip_grad_value)


def no_decay_params(model: nn.Module) -> set[int]:
    """ids of the parameters `no_decay = "bias_and_norm"` exempts: every bias (a parameter
    whose name ends in "bias") and every parameter of a normalization layer."""
    out = set()
    for module in model.modules():
        norm = isinstance(module, NORMS) or bool(NORM_NAME.search(type(module).__name__))
        out |= {id(p) for name, p in module.named_parameters(recurse=False) if norm or name.endswith("bias")}
    return out


def decay_groups(model: nn.Module, params, m: ModelConfig):
    """The optimizer's parameters (model.parameters() or param groups) with each group split in
    two: its decayed parameters, and the exempt ones with weight_decay = 0 (marked `no_decay`)."""
    if m.optimizer.no_decay is None:
        return params
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    exempt = no_decay_params(model)
    out = []
    for group in groups:
        keep = [p for p in group["params"] if id(p) not in exempt]
        skip = [p for p in group["params"] if id(p) in exempt]
        out += [{**group, "params": keep}] if keep else []
        out += [{**group, "params": skip, "weight_decay": 0.0, "no_decay": True}] if skip else []
    return out


def make_scheduler(m: ModelConfig, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, source: str = "config"):
    """The model's scheduler: the named one (a shorthand with its length filled in), after its
    warmup where one is set. `steps_per_epoch`: optimizer steps per epoch (0: unknown, a probe)."""
    s = m.scheduler
    warmup = s.warmup_steps or s.warmup_epochs or 0
    name, args = s.name, s.args
    if name in SHORTHANDS:
        name, length, defaults = SHORTHANDS[name]
        total = epochs * max(steps_per_epoch, 1) if s.interval == "step" else epochs
        if s.interval == "step" and steps_per_epoch and warmup >= total:  # known once the data is: refused before training
            raise ConfigError([Problem(source, f"model.{m.name}.scheduler.warmup_steps", f"{warmup} leaves no step of the run's {total:,} optimizer steps for the {s.name} decay")])
        args = defaults | {length: max(total - warmup, 1)} | args
    if not warmup:
        return components.create_scheduler(name, optimizer, args)
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=s.warmup_start_factor or WARMUP_START, end_factor=1.0, total_iters=warmup)
    main = components.create_scheduler(name, optimizer, args)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def optimizer_steps(cfg: Config, train_size: int | None) -> int:
    """Optimizer steps per epoch: a step every `accumulate` batches, and one on an epoch's remainder."""
    return -(-batches_per_epoch(train_size, cfg.data.batch_size) // cfg.experiment.accumulate)


# ------------------------------------------------------------ what the tables and the plan say


def info(cfg: Config, m: ModelConfig) -> dict[str, Any]:
    """models.csv columns, only where a recipe key is set (other runs' tables stay as they were)."""
    out: dict[str, Any] = {}
    k = cfg.experiment.accumulate
    if k > 1:
        out |= {"accumulate": k, "effective_batch": cfg.data.batch_size * k}
    if m.optimizer.no_decay is not None:
        out["no_decay"] = m.optimizer.no_decay
    if m.scheduler is not None and (m.scheduler.warmup_steps or m.scheduler.warmup_epochs):
        out["warmup"] = warmup_text(m.scheduler)
    for key in ("clip_grad_norm", "clip_grad_value"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out


def plan_text(m: ModelConfig, optimizer: torch.optim.Optimizer) -> str:
    """The plan's words after the optimizer: ` + warmup 100 steps`, the exempt tensors, clipping."""
    parts = []
    if m.optimizer.no_decay is not None:
        exempt = [p for g in optimizer.param_groups if g.get("no_decay") for p in g["params"]]
        parts.append(f"; no decay on biases and norms: {len(exempt)} tensors, {sum(p.numel() for p in exempt):,} params")
    if m.clip_grad_norm is not None:
        parts.append(f"; clip grad norm {m.clip_grad_norm}")
    if m.clip_grad_value is not None:
        parts.append(f"; clip grad value {m.clip_grad_value}")
    return "".join(parts)


def scheduler_text(m: ModelConfig) -> str:
    """` + warmup 100 steps + linear` (the scheduler as the plan names it)."""
    s = m.scheduler
    warmup = f"warmup {warmup_text(s)} + " if s.warmup_steps or s.warmup_epochs else ""
    return f" + {warmup}{s.name}" + (" (per step)" if s.interval == "step" else "")


def warmup_text(s: SchedulerConfig) -> str:
    n, unit = (s.warmup_steps, "step") if s.warmup_steps else (s.warmup_epochs, "epoch")
    return f"{n} {unit}{'s' if n != 1 else ''}"


def accumulate_text(cfg: Config, train_size: int) -> str | None:
    """The plan's line for accumulation (None without it)."""
    k, b = cfg.experiment.accumulate, cfg.data.batch_size
    if k == 1:
        return None
    batches = batches_per_epoch(train_size, b)
    rest = batches % k
    tail = f" (the last on the remaining {rest} batch{'es' if rest > 1 else ''})" if rest else ""
    return f"accumulate = {k}: effective batch {b * k} = {b} x {k}; {optimizer_steps(cfg, train_size):,} optimizer steps per model per epoch{tail}"

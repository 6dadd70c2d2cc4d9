"""Experiment config: TOML (or a dict) -> `--set` overrides -> sweeps expanded -> validated,
typed objects.

Nothing is built before the whole config checks out; every problem is reported at once,
each with its file and dotted key path. From Python, `arch`, `data.dataset` and `loss.name`
may also hold live objects (a class, a factory, an instance; see runner/build/components.py).
"""
from __future__ import annotations

import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from runner.engine.rng import derive_seed
from runner.errors import ConfigError, Problem, did_you_mean
from runner.config.overrides import apply_overrides, parse_override_value, plain_copy, split_override  # noqa: F401 - re-exported

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Model names become directory names (tb/<model>/): no separators, no "..", nothing empty.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,=+\-\[\]]*$")


@dataclass
class EarlyStoppingConfig:
    metric: str = "test_loss"  # test_loss | test_acc | train_loss | train_acc (acc: higher is better)
    patience: int = 3  # epochs without improvement before the model leaves the pass
    min_delta: float = 0.0  # smallest change that counts as an improvement


@dataclass
class ExperimentConfig:
    name: str = "experiment"  # run directory: <output_dir>/<name>/
    seed: int = 0  # seeds the data order; model seeds derive from (seed, model name)
    seeds: list[int] | None = None  # repeat the whole pass once per seed (overrides `seed`)
    epochs: int = 1  # full passes over the train split
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    output_dir: str = "runs"  # relative to the working directory
    grad_histograms: bool = True  # per-layer gradient histograms in TensorBoard every epoch
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch every N steps; unset = per epoch
    early_stopping: EarlyStoppingConfig | None = None  # default for every model; unset = train all epochs
    # Speed (README "Performance"); the defaults keep plain fp32 numerics.
    precision: str | int = "32"  # 32 | bf16-mixed | 16-mixed (autocast; fp16 adds a GradScaler per model)
    channels_last: bool = False  # models and image batches in channels_last memory format
    compile: bool = False  # torch.compile every model (falls back to eager, with a warning, where it fails)
    fuse: str = "off"  # off | on | auto: train same-architecture models as one vmapped group (auto: where measured faster)


@dataclass
class DataConfig:
    dataset: Any  # `compare list datasets`, or a reference: my_data.py:MyData (a DatasetAdapter)
    root: str = "data"  # where the dataset lives (relative to the working directory)
    download: bool = False  # let torchvision download it when missing
    batch_size: int = 64  # samples per training step
    eval_batch_size: int = 256  # samples per evaluation batch
    num_workers: int = 0  # DataLoader worker processes (0 = load in the main process)
    subset: int | None = None  # keep this many train samples (seeded choice); unset = all
    test_subset: int | None = None  # keep this many test samples (seeded choice); unset = all
    augment: bool = False  # the dataset's train-time augmentation (e.g. crop + flip for CIFAR)
    cache: str = "none"  # none | memory | device: decode once into a tensor, batch and augment it on the device
    disk_cache: bool = False  # with cache: keep the decoded tensor under <root>/.compare-cache/ (keyed by content)
    args: dict = field(default_factory=dict)  # extra keyword arguments for the dataset
    # torchvision.transforms.v2 steps by name, [{ name = "RandomCrop", size = 32, padding = 4 }];
    # they replace the dataset's default steps for that split (unset: the defaults).
    train_transforms: list | None = None
    eval_transforms: list | None = None


@dataclass
class LossConfig:
    name: Any = "CrossEntropyLoss"  # a torch.nn loss class or a reference; ONE object shared by all models
    args: dict = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "SGD"  # any torch.optim class
    args: dict = field(default_factory=lambda: {"lr": 0.01})  # its keyword arguments (lr, ...)


@dataclass
class SchedulerConfig:
    name: str  # any torch.optim.lr_scheduler class
    interval: str = "epoch"  # step the scheduler after every "epoch" or every "step"
    args: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str  # unique; used in tables and as the TensorBoard run name
    arch: Any  # `compare list models`, or a reference: my_model.py:Net, nb.ipynb:Net, pkg.mod:net
    args: dict = field(default_factory=dict)  # keyword arguments for the architecture
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig | None = None
    seed: int | None = None  # this model's RNG stream; unset = derived from (experiment seed, name)
    early_stopping: EarlyStoppingConfig | None = None  # overrides [experiment] early_stopping
    sweep_values: dict = field(default_factory=dict)  # set by sweep expansion: leaderboard columns sweep.<key>
    device: str | None = None  # cpu | cuda[:N] | mps: this model's own device; unset = experiment.device


@dataclass
class Config:
    experiment: ExperimentConfig
    data: DataConfig
    loss: LossConfig
    models: list[ModelConfig]
    source: str = "<config>"  # the file it came from, for messages
    references_from: Path | None = None  # `base_dir` of load_config: a run directory's copy resolves as its run did

    @property
    def base_dir(self) -> Path:
        """Where relative file references (`my_model.py:Net`) start: the TOML file's folder,
        else (a dict) the working directory."""
        return self.references_from or (Path(".") if self.source.startswith("<") else Path(self.source).parent)

    @property
    def seeds(self) -> list[int]:
        return list(self.experiment.seeds) if self.experiment.seeds else [self.experiment.seed]

    def early_stopping(self, model: ModelConfig) -> EarlyStoppingConfig | None:
        return model.early_stopping or self.experiment.early_stopping

    def model_seed(self, model: ModelConfig, experiment_seed: int | None = None) -> int:
        """A model's `seed` pins its stream in every repeat; else one per (experiment seed, name)."""
        if model.seed is not None:
            return model.seed
        return derive_seed(self.seeds[0] if experiment_seed is None else experiment_seed, model.name)

    def to_dict(self) -> dict:
        """The resolved config as plain TOML-able data (what `config.toml` in a run holds)."""

        from runner.build.references import describe  # noqa: PLC0415

        def plain(obj) -> dict:  # live Python objects are written as "<python:module.QualName>"
            out = {f.name: plain(v) if isinstance(v := getattr(obj, f.name), EarlyStoppingConfig) else v for f in fields(obj)}
            for key in ("dataset", "name"):
                if key in out and not isinstance(out[key], str):
                    out[key] = describe(out[key])
            for key in ("train_transforms", "eval_transforms"):
                if out.get(key) is not None:
                    out[key] = [t if isinstance(t, dict) else describe(t) for t in out[key]]
            return out

        def with_name(spec) -> dict:  # {name = ..., **args}: the inline-table form users write
            out = {"name": spec.name, **spec.args}
            if isinstance(spec, SchedulerConfig):
                out["interval"] = spec.interval
            return out

        models = []
        for m in self.models:
            entry = {"name": m.name, "arch": describe(m.arch), "args": m.args, "optimizer": with_name(m.optimizer)}
            if m.scheduler:
                entry["scheduler"] = with_name(m.scheduler)
            if m.seed is not None:
                entry["seed"] = m.seed
            if m.early_stopping is not None:
                entry["early_stopping"] = plain(m.early_stopping)
            if m.sweep_values:
                entry["sweep_values"] = m.sweep_values
            if m.device is not None:
                entry["device"] = m.device
            models.append(entry)
        return {
            "experiment": plain(self.experiment),
            "data": plain(self.data),
            "loss": plain(self.loss),
            "model": models,
        }


# ---------------------------------------------------------------- loading and overrides


def load_config(path: str | Path, overrides: list[str] = (), base_dir: Path | None = None) -> Config:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError([Problem(source, "-", f"cannot read config: {err.strerror or err}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([Problem(source, "-", f"TOML syntax error: {err}")]) from None
    return config_from_dict(raw, source=source, overrides=overrides, base_dir=base_dir)


def config_from_dict(raw: dict, source: str = "<dict>", overrides: list[str] = (), base_dir: Path | None = None) -> Config:
    from runner.config import sweeps  # noqa: PLC0415

    problems: list[Problem] = []
    # Overrides address the models as written (`model.tudui.sweep=...`); one that names a model
    # only a sweep creates (`model.tudui[lr=0.1].seed=3`) is applied after the expansion.
    raw, overridden, later = apply_overrides(raw, overrides, source, problems, defer_unknown_models=True)
    if problems:
        raise ConfigError(problems)
    points: dict[str, list[str]] = {}
    if isinstance(raw.get("model"), list):
        raw["model"], points = sweeps.expand(raw["model"], source, problems)
        # An override of a swept table as written covers each of its points.
        overridden |= {
            key.replace(f"model.{base}.", f"model.{point}.", 1)
            for base, names in points.items() for point in names for key in overridden if key.startswith(f"model.{base}.")
        }
    raw, more, _ = apply_overrides(raw, later, source, problems)
    overridden |= more
    config = _validate(raw, source, problems, base_dir)
    problems = sweeps.collapse(problems, points)
    # A problem in a key given with --set (or inside a table given with --set) is reported against --set.
    problems = [Problem("--set", p.key, p.message) if any(p.key == k or p.key.startswith((k + ".", k + "[")) for k in overridden) else p for p in problems]
    if problems:
        raise ConfigError(problems)
    return config


# ---------------------------------------------------------------- validation


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:  # a name, a reference or a live object: checked by runner.build.components
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint) if h is not type(None))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"array of {_type_name(typing.get_args(hint)[0])}s"
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint) if h is not type(None))
    return {dict: "table", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _table(raw: Any, cls: type, where: str, source: str, problems: list[Problem], skip=()) -> dict | None:
    """Check one TOML table against a dataclass: unknown keys, missing keys, value types."""
    if not isinstance(raw, dict):
        problems.append(Problem(source, where, f"expected a table, got {raw!r}"))
        return None
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    out = {}
    for key in raw:
        if key not in names and key not in skip:
            problems.append(Problem(source, f"{where}.{key}", f"unknown key{did_you_mean(key, names)}"))
    for f in fields(cls):
        if f.name in skip:
            continue
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(Problem(source, f"{where}.{f.name}", "missing required key"))
            continue
        value = raw[f.name]
        if _type_ok(value, hints[f.name]):
            out[f.name] = float(value) if hints[f.name] is float else value
        else:
            expected = _type_name(hints[f.name])
            problems.append(Problem(source, f"{where}.{f.name}", f"expected {expected}, got {value!r}"))
    return out


def _named_spec(raw: Any, cls: type, where: str, source: str, problems: list[Problem]):
    """`{name = "SGD", lr = 0.1, ...}`: a name plus the class's keyword arguments."""
    if not isinstance(raw, dict):
        problems.append(Problem(source, where, f"expected a table like {{ name = ..., ... }}, got {raw!r}"))
        return None
    name = raw.get("name")
    if not isinstance(name, str):
        problems.append(Problem(source, f"{where}.name", f"expected a string, got {name!r}"))
        return None
    args = {k: v for k, v in raw.items() if k not in ("name", "interval")}
    if cls is SchedulerConfig:
        interval = raw.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            problems.append(Problem(source, f"{where}.interval", f"expected 'epoch' or 'step', got {interval!r}"))
        return SchedulerConfig(name=name, interval=interval, args=args)
    return OptimizerConfig(name=name, args=args)


def _early_stopping(raw: Any, where: str, source: str, problems: list[Problem]) -> EarlyStoppingConfig | None:
    values = _table(raw, EarlyStoppingConfig, where, source, problems)
    if values is None:
        return None
    config = EarlyStoppingConfig(**values)
    if config.metric not in ("test_loss", "test_acc", "train_loss", "train_acc"):
        problems.append(Problem(source, f"{where}.metric", f"expected test_loss, test_acc, train_loss or train_acc, got {config.metric!r}"))
    if config.patience < 1:
        problems.append(Problem(source, f"{where}.patience", f"expected >= 1, got {config.patience}"))
    if config.min_delta < 0:
        problems.append(Problem(source, f"{where}.min_delta", f"expected >= 0, got {config.min_delta}"))
    return config


def _validate(raw: dict, source: str, problems: list[Problem], base_dir: Path | None = None) -> Config | None:
    for key in raw:
        if key not in ("experiment", "data", "loss", "model"):
            problems.append(Problem(source, key, f"unknown table{did_you_mean(key, ['experiment', 'data', 'loss', 'model'])}"))
    exp = _table(raw.get("experiment", {}), ExperimentConfig, "experiment", source, problems, skip=("early_stopping",))
    if exp is not None and "early_stopping" in raw.get("experiment", {}):
        exp["early_stopping"] = _early_stopping(raw["experiment"]["early_stopping"], "experiment.early_stopping", source, problems)
    data = _table(raw.get("data", None) or {}, DataConfig, "data", source, problems)
    loss = _table(raw.get("loss", {}), LossConfig, "loss", source, problems)
    raw_models = raw.get("model", [])
    if not isinstance(raw_models, list) or not raw_models:
        problems.append(Problem(source, "model", "expected at least one [[model]] table"))
        raw_models = []
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_models):
        label = entry.get("name") if isinstance(entry, dict) else None
        where = f"model.{label}" if isinstance(label, str) else f"model[{i}]"
        values = _table(entry, ModelConfig, where, source, problems, skip=("optimizer", "scheduler", "early_stopping"))
        if values is None or "name" not in values or "arch" not in values:
            continue
        if "early_stopping" in entry:
            values["early_stopping"] = _early_stopping(entry["early_stopping"], f"{where}.early_stopping", source, problems)
        name = values["name"]
        if not NAME_PATTERN.match(name) or ".." in name:
            problems.append(Problem(source, f"{where}.name", f"{name!r} is not a safe name: use letters, digits, _ . , = + - [ ]"))
        if name in seen:
            problems.append(Problem(source, f"{where}.name", f"duplicate model name {name!r}"))
        seen.add(name)
        optimizer = _named_spec(entry.get("optimizer", {"name": "SGD", "lr": 0.01}), OptimizerConfig, f"{where}.optimizer", source, problems)
        scheduler = None
        if "scheduler" in entry:
            scheduler = _named_spec(entry["scheduler"], SchedulerConfig, f"{where}.scheduler", source, problems)
        models.append(ModelConfig(**values, optimizer=optimizer or OptimizerConfig(), scheduler=scheduler))
    if exp is None or data is None or loss is None or "dataset" not in data:
        return None
    # Keys with bad types were left out (defaults stand in), so names and ranges of the
    # others are still checked: the user sees every problem in one go.
    config = Config(ExperimentConfig(**exp), DataConfig(**data), LossConfig(**loss), models, source, base_dir)
    _check_values(config, problems)
    return config


def _check_values(cfg: Config, problems: list[Problem]) -> None:
    """Ranges and names that must exist in a registry (loaded lazily: they import torch)."""
    from runner.build import components  # noqa: PLC0415 - heavy imports only once the types are right

    src = cfg.source

    def bad(key: str, message: str) -> None:
        problems.append(Problem(src, key, message))

    e, d = cfg.experiment, cfg.data
    if e.seeds is not None and (not e.seeds or len(set(e.seeds)) != len(e.seeds)):
        bad("experiment.seeds", f"expected distinct seeds, got {e.seeds}")
    if e.checkpoint_every_steps is not None and e.checkpoint_every_steps < 1:
        bad("experiment.checkpoint_every_steps", f"expected >= 1, got {e.checkpoint_every_steps}")
    if e.epochs < 1:
        bad("experiment.epochs", f"expected >= 1, got {e.epochs}")
    if not DEVICE_PATTERN.match(e.device):
        bad("experiment.device", f"expected auto, cpu, cuda, cuda:N or mps, got {e.device!r}")
    if e.precision == 32:  # `precision = 32` written as a TOML integer
        e.precision = "32"
    for key, value, allowed in (
        ("experiment.precision", e.precision, PRECISIONS),
        ("experiment.fuse", e.fuse, ("off", "on", "auto")),
        ("data.cache", d.cache, ("none", "memory", "device")),
    ):
        if value not in allowed:
            bad(key, f"expected one of {', '.join(allowed)}, got {value!r}{did_you_mean(str(value), list(allowed))}")
    if d.disk_cache and d.cache == "none":
        bad("data.disk_cache", 'keeps the decoded tensor of data.cache; set data.cache = "memory" or "device"')
    for key in ("batch_size", "eval_batch_size"):
        if getattr(d, key) < 1:
            bad(f"data.{key}", f"expected >= 1, got {getattr(d, key)}")
    if d.num_workers < 0:
        bad("data.num_workers", f"expected >= 0, got {d.num_workers}")
    for key in ("subset", "test_subset"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            bad(f"data.{key}", f"expected >= 1, got {getattr(d, key)}")
    base = cfg.base_dir
    for message in components.check_dataset(d.dataset, d.args, base):
        bad(f"data.{message.key}", message.text)
    for key in ("train_transforms", "eval_transforms"):
        messages = components.check_transforms(getattr(d, key), key)
        for message in messages:
            bad(f"data.{message.key}", message.text)
        if d.cache != "none" and not messages:  # only what the cached path runs on the device
            from runner.data.cache import check_specs  # noqa: PLC0415

            for index, reason in check_specs(getattr(d, key), train=key == "train_transforms"):
                bad(f"data.{key}[{index}]", reason)
    if d.augment and d.train_transforms is not None:
        bad("data.train_transforms", "replaces the dataset's augmentation; set augment = false (or drop train_transforms)")
    for message in components.check_loss(cfg.loss.name, cfg.loss.args, base):
        bad(f"loss.{message.key}", message.text)
    for m in cfg.models:
        where = f"model.{m.name}"
        if m.device is not None and not DEVICE_PATTERN.match(m.device):
            bad(f"{where}.device", f"expected auto, cpu, cuda, cuda:N or mps, got {m.device!r}")
        for message in components.check_model(m.arch, m.args, base):
            bad(f"{where}.{message.key}", message.text)
        for message in components.check_optimizer(m.optimizer.name, m.optimizer.args):
            bad(f"{where}.optimizer.{message.key}", message.text)
        if m.scheduler:
            for message in components.check_scheduler(m.scheduler.name, m.scheduler.args):
                bad(f"{where}.scheduler.{message.key}", message.text)

"""Experiment config: TOML (or a dict) -> `--set` overrides -> sweeps expanded -> validated,
typed objects.

Nothing is built before the whole config checks out; every problem is reported at once,
each with its file and dotted key path. From Python, `arch`, `data.dataset` and `loss.name`
may also hold live objects (a class, a factory, an instance; see runner/build/components.py).
"""
from __future__ import annotations

import functools
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from runner.build.arguments import describe_type, matches
from runner.engine.rng import derive_seed
from runner.errors import ConfigError, Problem, did_you_mean, shown
from runner.config.overrides import apply_overrides, parse_override_value, plain_copy, split_override  # noqa: F401 - re-exported

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Model and experiment names become directory names (tb/<model>/, runs/<name>/): no separators, no "..", nothing empty.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,=+\-\[\]]*$")
MAX_PATH_PART_BYTES = 255  # NAME_MAX: one folder or file name in a path
MAX_NAME_CHARS = 120  # file names derived from a model name (checkpoints, predictions) stay under 255 bytes


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
    # Speed (docs/performance.md); the defaults keep plain fp32 numerics.
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

    @property
    def base_dir(self) -> Path:
        """Where relative file references (`my_model.py:Net`) start: the TOML file's folder,
        else (a dict) the working directory."""
        return Path(".") if self.source.startswith("<") else Path(self.source).parent

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


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError([Problem(source, "-", f"cannot read config: {err.strerror or err}")]) from None
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise ConfigError([Problem(source, "-", f"not UTF-8 text: byte {err.object[err.start]:#04x} on line {line} (TOML files are UTF-8)")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([Problem(source, "-", f"TOML syntax error: {err}")]) from None
    return config_from_dict(raw, source=source, overrides=overrides)


def config_from_dict(raw: dict, source: str = "<dict>", overrides: list[str] = ()) -> Config:
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
    config = _validate(raw, source, problems)
    problems = sweeps.collapse(problems, points)
    # A problem in a key given with --set (or inside a table given with --set) is reported against --set.
    problems = [Problem("--set", p.key, p.message) if any(p.key == k or p.key.startswith((k + ".", k + "[")) for k in overridden) else p for p in problems]
    if problems:
        raise ConfigError(problems)
    return config


# ---------------------------------------------------------------- validation


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _table(raw: Any, cls: type, where: str, source: str, problems: list[Problem], skip=()) -> dict | None:
    """Check one TOML table against a dataclass: unknown keys, missing keys, value types."""
    if not isinstance(raw, dict):
        problems.append(Problem(source, where, f"expected a table, got {shown(raw)}"))
        return None
    hints = _field_types(cls)
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
        if matches(value, hints[f.name]):
            out[f.name] = float(value) if hints[f.name] is float else value
        else:
            expected = describe_type(hints[f.name])
            problems.append(Problem(source, f"{where}.{f.name}", f"expected {expected}, got {shown(value)}"))
    return out


def _named_spec(raw: Any, cls: type, where: str, source: str, problems: list[Problem]):
    """`{name = "SGD", lr = 0.1, ...}`: a name plus the class's keyword arguments."""
    if not isinstance(raw, dict):
        problems.append(Problem(source, where, f"expected a table like {{ name = ..., ... }}, got {shown(raw)}"))
        return None
    name = raw.get("name")
    if not isinstance(name, str):
        problems.append(Problem(source, f"{where}.name", f"expected a string, got {shown(name)}"))
        return None
    args = {k: v for k, v in raw.items() if k not in ("name", "interval")}
    if cls is SchedulerConfig:
        interval = raw.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            problems.append(Problem(source, f"{where}.interval", f"expected 'epoch' or 'step', got {shown(interval)}"))
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


def _validate(raw: dict, source: str, problems: list[Problem]) -> Config | None:
    for key in raw:
        if key not in ("experiment", "data", "loss", "model"):
            problems.append(Problem(source, key, f"unknown table{did_you_mean(key, ['experiment', 'data', 'loss', 'model'])}"))
    exp = _table(raw.get("experiment", {}), ExperimentConfig, "experiment", source, problems, skip=("early_stopping",))
    if exp is not None and "early_stopping" in raw.get("experiment", {}):
        exp["early_stopping"] = _early_stopping(raw["experiment"]["early_stopping"], "experiment.early_stopping", source, problems)
    if exp is not None and "name" in exp and (not NAME_PATTERN.match(exp["name"]) or ".." in exp["name"]):  # the run directory's name
        problems.append(Problem(source, "experiment.name", f"{exp['name']!r} is not a safe name: use letters, digits, _ . , = + - [ ]"))
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
            problems.append(Problem(source, f"{where}.name", f"{shown(name)} is not a safe name: use letters, digits, _ . , = + - [ ]"))
        elif len(name) > MAX_NAME_CHARS:
            problems.append(Problem(source, f"{where}.name", f"{len(name)} characters ({shown(name)}); at most {MAX_NAME_CHARS}: names become file names"))
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
    config = Config(ExperimentConfig(**exp), DataConfig(**data), LossConfig(**loss), models, source)
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
    seeds = [("experiment.seed", e.seed)] + [("experiment.seeds", s) for s in e.seeds or []] + [(f"model.{m.name}.seed", m.seed) for m in cfg.models if m.seed is not None]
    for key, seed in seeds:
        if not -(2**63) <= seed < 2**64:
            bad(key, f"expected a seed from -2**63 to 2**64 - 1 (what torch.manual_seed takes), got {shown(seed)}")
    if e.checkpoint_every_steps is not None and e.checkpoint_every_steps < 1:
        bad("experiment.checkpoint_every_steps", f"expected >= 1, got {e.checkpoint_every_steps}")
    if e.epochs < 1:
        bad("experiment.epochs", f"expected >= 1, got {e.epochs}")
    if not DEVICE_PATTERN.match(e.device):
        bad("experiment.device", f"expected auto, cpu, cuda, cuda:N or mps, got {e.device!r}")
    for key, folder in (("experiment.output_dir", e.output_dir), ("data.root", d.root)):
        longest = max(Path(folder).parts or ("",), key=lambda part: len(part.encode()))
        if len(longest.encode()) > MAX_PATH_PART_BYTES:
            bad(key, f"a folder name of {len(longest.encode())} bytes ({shown(longest)}); file systems allow {MAX_PATH_PART_BYTES}")
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
    problems += components.check_dataset(d.dataset, d.args, src, "data", base)
    for key in ("train_transforms", "eval_transforms"):
        found = components.check_transforms(getattr(d, key), src, f"data.{key}")
        problems += found
        if d.cache != "none" and not found:  # only what the cached path runs on the device
            from runner.data.cache import check_specs  # noqa: PLC0415

            for index, reason in check_specs(getattr(d, key), train=key == "train_transforms"):
                bad(f"data.{key}[{index}]", reason)
    if d.augment and d.train_transforms is not None:
        bad("data.train_transforms", "replaces the dataset's augmentation; set augment = false (or drop train_transforms)")
    problems += components.check_loss(cfg.loss.name, cfg.loss.args, src, "loss", base)
    for m in cfg.models:
        where = f"model.{m.name}"
        if m.device is not None and not DEVICE_PATTERN.match(m.device):
            bad(f"{where}.device", f"expected auto, cpu, cuda, cuda:N or mps, got {m.device!r}")
        problems += components.check_model(m.arch, m.args, src, where, base)
        problems += components.check_optimizer(m.optimizer.name, m.optimizer.args, src, f"{where}.optimizer")
        if m.scheduler:
            problems += components.check_scheduler(m.scheduler.name, m.scheduler.args, m.optimizer, src, f"{where}.scheduler")

"""Loading a config: TOML (or a dict) -> `--set` overrides -> sweeps expanded -> validated,
typed objects (runner/config/schema.py). Nothing is built before the whole config checks out;
every problem is reported at once, each with its file and dotted key path."""
from __future__ import annotations

import functools
import math
import tomllib
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from compare.resolve import components, head_losses, metric_refs
from compare.assemble import finetune, recipe
from compare.resolve.arguments import describe_type, matches
from compare.config import search, sweeps
from compare.config.overrides import apply_overrides
from compare.metrics.builtin import BUILTIN
from compare.config.schema import (
    DEFAULT_OPTIMIZER,
    DEVICE_PATTERN,
    EARLY_STOPPING_METRICS,
    MAX_NAME_CHARS,
    MAX_PATH_PART_BYTES,
    NAME_PATTERN,
    PLACES,
    PRECISIONS,
    SELECT,
    VAL_FIX,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    RaceConfig,
    ReportConfig,
    SchedulerConfig,
)
from compare.data.cache import check_specs
from compare.data.collate import check_collate
from compare.engine.numerics import COMPILE_MODES
from compare.errors import ConfigError, Problem, clip, did_you_mean, shown


# ---------------------------------------------------------------- loading and overrides


def load_config(path: str | Path, overrides: list[str] = (), base_dir: Path | None = None) -> Config:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError([Problem(source, "-", f"cannot read config: {err.strerror or err}")]) from None
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise ConfigError([Problem(source, "-", f"not UTF-8 text: byte {err.object[err.start]:#04x} on line {line} (TOML files are UTF-8)")]) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some Windows editors write; TOML has no use for it
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([Problem(source, "-", f"TOML syntax error: {err}")]) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError([Problem(source, "-", f"arrays or tables nested too deeply to read; a config nests at most {MAX_DEPTH} levels")]) from None
    return config_from_dict(raw, source=source, overrides=overrides, base_dir=base_dir)


def config_from_dict(raw: dict, source: str = "<dict>", overrides: list[str] = (), base_dir: Path | None = None) -> Config:
    """`base_dir`: where relative references resolve (a run directory's config copy: where its run resolved them)."""
    problems: list[Problem] = []
    _check_depth(raw, source)
    # Overrides address the models as written (`model.tudui.sweep=...`); one that names a model
    # only a sweep creates (`model.tudui[lr=0.1].seed=3`) is applied after the expansion.
    raw, overridden, later = apply_overrides(raw, overrides, source, problems, defer_unknown_models=True)
    if problems:
        raise ConfigError(problems)
    _check_depth(raw, "--set")  # the file was checked above: anything deeper now came from --set
    points: dict[str, list[str]] = {}
    if isinstance(raw.get("model"), list):
        spaces = raw.get("spaces") if isinstance(raw.get("spaces"), dict) else {}
        raw["model"], points, families = sweeps.expand(raw["model"], source, problems, spaces)
        if families:
            raw["families"] = (raw.get("families") if isinstance(raw.get("families"), dict) else {}) | families
        # An override of a swept table as written covers each of its points.
        overridden |= {
            key.replace(f"model.{base}.", f"model.{point}.", 1)
            for base, names in points.items() for point in names for key in overridden if key.startswith(f"model.{base}.")
        }
    raw, more, _ = apply_overrides(raw, later, source, problems)
    overridden |= more
    config = _validate(raw, source, problems, base_dir)
    problems = sweeps.collapse(problems, points)
    # A problem in a key given with --set, inside a table given with --set, or in a table one of
    # whose keys --set gave (an optimizer's trial call with --set's lr) is reported against --set.
    problems = [Problem("--set", p.key, p.message) if any(p.key == k or p.key.startswith((k + ".", k + "[")) or k.startswith(p.key + ".") for k in overridden) else p for p in problems]
    # The file's model args that an arch from --set does not take: say where that arch came from.
    problems = [Problem(p.file, p.key, f"{p.message}; {arch} was set with --set") if p.file != "--set" and (arch := _arch_key(p.key)) in overridden else p for p in problems]
    if problems:
        raise ConfigError(problems)
    return config


MAX_COUNT = 2**63 - 1  # sizes and counts: what a C index (sys.maxsize) holds
MAX_WORKERS = 256  # data.num_workers: a fixed cap (not this machine's CPUs), so a run's config resumes on any machine
MAX_DEPTH = 32  # tables and arrays in tables and arrays: far more than any config needs
MAX_SEED = 2**63 - 1  # seeds: torch takes up to 2**64 - 1, but the test subset draws with seed + 1 (see _check_values)


def _arch_key(key: str) -> str | None:
    """`model.a.args.hidden` -> `model.a.arch` (the arch whose arguments these are)."""
    head, sep, _ = key.partition(".args.")
    return f"{head}.arch" if sep and head.startswith("model.") else None


def _check_depth(raw: Any, source: str) -> None:
    """Refuse data nested deeper than MAX_DEPTH before recursive code (copies, type checks,
    reprs) meets it and Python's recursion limit ends compare with a RecursionError. Iterative."""
    stack = [(raw, 0, "")]
    while stack:
        value, depth, key = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError([Problem(source, clip(key.lstrip(".") or "-", 80), f"nested more than {MAX_DEPTH} levels deep; a config nests at most {MAX_DEPTH}")])
        if isinstance(value, dict):
            stack += [(v, depth + 1, f"{key}.{k}") for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, depth + 1, f"{key}[{i}]") for i, v in enumerate(value)]


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
    args = {k: v for k, v in raw.items() if k not in ("name", "interval", *recipe.KEYS)}  # KEYS: no_decay, warmup_*: compare's, not the class's
    if cls is SchedulerConfig:
        interval = raw.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            problems.append(Problem(source, f"{where}.interval", f"expected 'epoch' or 'step', got {shown(interval)}"))
        return SchedulerConfig(name=name, interval=interval, args=args, **recipe.spec_keys(raw, cls, where, source, problems))
    return OptimizerConfig(name=name, args=args, **recipe.spec_keys(raw, cls, where, source, problems))


def _early_stopping(raw: Any, where: str, source: str, problems: list[Problem]) -> EarlyStoppingConfig | None:
    values = _table(raw, EarlyStoppingConfig, where, source, problems)
    if values is None:
        return None
    config = EarlyStoppingConfig(**values)
    if isinstance(config.metric, str) and config.metric.startswith("test_"):
        fix = config.metric.replace("test_", "val_", 1)
        problems.append(Problem(source, f"{where}.metric", f"{config.metric!r} would let the test split steer training (the verdict must read test only once); use {fix!r} and {VAL_FIX}"))
    elif config.metric not in EARLY_STOPPING_METRICS and not (isinstance(config.metric, str) and config.metric.startswith("val_") and known_metric(config.metric[4:])):
        problems.append(Problem(source, f"{where}.metric", f"expected one of {', '.join(EARLY_STOPPING_METRICS)}, got {shown(config.metric)}{did_you_mean(str(config.metric), list(EARLY_STOPPING_METRICS))}"))
    if config.patience < 1:
        problems.append(Problem(source, f"{where}.patience", f"expected >= 1, got {config.patience}"))
    if config.min_delta < 0:
        problems.append(Problem(source, f"{where}.min_delta", f"expected >= 0, got {config.min_delta}"))
    return config


def _race(raw: Any, where: str, source: str, problems: list[Problem]) -> RaceConfig | None:
    values = _table(raw, RaceConfig, where, source, problems)
    if values is None:
        return None
    race = RaceConfig(**values)
    if not (isinstance(race.metric, str) and race.metric.startswith("val_") and known_metric(race.metric[4:])):
        fix = " (racing reads val, never test)" if str(race.metric).startswith("test_") else ""
        problems.append(Problem(source, f"{where}.metric", f"expected val_<metric> (val_acc, val_macro_f1, val_rmse, ...: docs/metrics.md), got {shown(race.metric)}{fix}"))
    if not 0 < race.alpha < 1:
        problems.append(Problem(source, f"{where}.alpha", f"expected 0 < alpha < 1, got {shown(race.alpha)}"))
    for key in ("min_epochs", "every"):
        if getattr(race, key) < 1:
            problems.append(Problem(source, f"{where}.{key}", f"expected >= 1, got {getattr(race, key)}"))
    return race


def _validate(raw: dict, source: str, problems: list[Problem], base_dir: Path | None = None) -> Config | None:
    tables = ["experiment", "data", "loss", "report", "model", "spaces", "families"]
    for key in raw:
        if key not in tables:
            problems.append(Problem(source, key, f"unknown table{did_you_mean(key, tables)}"))
    exp = _table(raw.get("experiment", {}), ExperimentConfig, "experiment", source, problems, skip=("early_stopping", "race"))
    if exp is not None and "race" in raw.get("experiment", {}):
        exp["race"] = _race(raw["experiment"]["race"], "experiment.race", source, problems)
    if exp is not None and "early_stopping" in raw.get("experiment", {}):
        exp["early_stopping"] = _early_stopping(raw["experiment"]["early_stopping"], "experiment.early_stopping", source, problems)
    if exp is not None and "name" in exp and (not NAME_PATTERN.match(exp["name"]) or ".." in exp["name"]):  # the run directory's name
        problems.append(Problem(source, "experiment.name", f"{shown(exp['name'])} is not a safe name: use letters, digits, _ . , = + - [ ]"))
    elif exp is not None and "name" in exp and len(exp["name"].encode()) > MAX_PATH_PART_BYTES:
        problems.append(Problem(source, "experiment.name", f"{len(exp['name'].encode())} bytes ({clip(repr(exp['name']), 60)}); the run directory's name can have at most {MAX_PATH_PART_BYTES}"))
    data = _table(raw.get("data", None) or {}, DataConfig, "data", source, problems)
    loss = _table(head_losses.normalise(raw.get("loss", {})), LossConfig, "loss", source, problems)  # [loss.<head>]: a loss per head
    report = _table(raw.get("report", {}), ReportConfig, "report", source, problems)
    raw_models = raw.get("model", [])
    if not isinstance(raw_models, list) or not raw_models:
        problems.append(Problem(source, "model", "expected at least one [[model]] table"))
        raw_models = []
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_models):
        label = entry.get("name") if isinstance(entry, dict) else None
        # model.<name> where the name reads as one (not "", "...", ".x"): else model[i], not model.....name
        readable = isinstance(label, str) and label.strip(".") == label and label and ".." not in label
        where = f"model.{label}" if readable else f"model[{i}]"
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
        optimizer = _named_spec(entry.get("optimizer", DEFAULT_OPTIMIZER), OptimizerConfig, f"{where}.optimizer", source, problems)
        scheduler = None
        if "scheduler" in entry:
            scheduler = _named_spec(entry["scheduler"], SchedulerConfig, f"{where}.scheduler", source, problems)
        models.append(ModelConfig(**values, optimizer=optimizer or OptimizerConfig(), scheduler=scheduler))
    if exp is None or data is None or loss is None or report is None or "dataset" not in data:
        return None
    # Keys with bad types were left out (defaults stand in), so names and ranges of the
    # others are still checked: the user sees every problem in one go.
    config = Config(ExperimentConfig(**exp), DataConfig(**data), LossConfig(**loss), models, source, base_dir, ReportConfig(**report))
    config.spaces, config.families = _spaces(raw.get("spaces", {}), source, problems), raw.get("families", {})
    if not isinstance(config.families, dict):
        problems.append(Problem(source, "families", f"expected a table (written by the expansion of sweeps and searches), got {shown(config.families)}"))
        config.families = {}
    _check_values(config, problems)
    return config


METRIC_NAMES = sorted({m.name for m in BUILTIN})


def known_metric(name: str) -> bool:
    """A built-in metric, or one on a head (`digit/acc`: its heads are checked once the data says them)."""
    return name in METRIC_NAMES or name.rpartition("/")[2] in METRIC_NAMES
BY = ("model", "family")


def _spaces(raw: Any, source: str, problems: list[Problem]) -> dict:
    """[spaces.<name>] tables, each checked whether a search uses it or not."""
    if not isinstance(raw, dict):
        problems.append(Problem(source, "spaces", f"expected tables like [spaces.lr_wd], got {shown(raw)}"))
        return {}
    for name, space in raw.items():
        search.check_space(space, f"spaces.{name}", source, problems)
    return raw


def _check_values(cfg: Config, problems: list[Problem]) -> None:
    """Ranges and names that must exist in a registry (loaded lazily: they import torch)."""

    src = cfg.source

    def bad(key: str, message: str) -> None:
        problems.append(Problem(src, key, message))

    e, d = cfg.experiment, cfg.data
    if e.seeds is not None and (not e.seeds or len(set(e.seeds)) != len(e.seeds)):
        bad("experiment.seeds", f"expected distinct seeds, got {e.seeds}")
    seeds = [("experiment.seed", e.seed)] + [("experiment.seeds", s) for s in e.seeds or []] + [(f"model.{m.name}.seed", m.seed) for m in cfg.models if m.seed is not None]
    for key, seed in seeds:
        # torch.manual_seed takes -2**63 .. 2**64 - 1, but a negative seed wraps (-1 is 2**64 - 1)
        # and the test subset is drawn with seed + 1, which overflows at 2**64 - 1: [0, MAX_SEED].
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            bad(key, f"expected a seed from 0 to 2**63 - 1, got {shown(seed)}")
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
        ("experiment.streams", e.streams, ("off", "on", "auto")),
        ("experiment.place", e.place, PLACES),
        ("data.cache", d.cache, ("none", "memory", "device")),
        ("report.select", cfg.report.select, SELECT),
        ("report.by", cfg.report.by, BY),
    ):
        if value not in allowed:
            bad(key, f"expected one of {', '.join(allowed)}, got {value!r}{did_you_mean(str(value), list(allowed))}")
    r = cfg.report
    for i, name in enumerate(r.metrics or []):
        if not isinstance(name, str) or (not known_metric(name) and not metric_refs.is_metric_reference(name)):
            bad(f"report.metrics[{i}]", f"unknown metric {shown(name)}{did_you_mean(str(name), METRIC_NAMES)} (docs/metrics.md lists them; a metric of your own: my_metrics.py:name)")
    if r.metrics is not None and not r.metrics:
        bad("report.metrics", "expected at least one metric (or leave it unset for the task's defaults)")
    own = metric_refs.check_metrics(r.metrics or [], src, "report.metrics", cfg.base_dir)
    problems += own
    if r.by == "family" and e.race is not None:
        bad("experiment.race", "racing stops trials early, which understates them in the family verdict's tuning curves; it cannot be combined with report.by = \"family\" (drop one)")
    if r.target is not None and (isinstance(r.target, bool) or not math.isfinite(r.target)):
        bad("report.target", f"expected a finite score, got {shown(r.target)}")
    if r.margin is not None and (isinstance(r.margin, bool) or not isinstance(r.margin, (int, float)) or not math.isfinite(r.margin) or r.margin <= 0):
        bad("report.margin", f"expected a positive number in the ranked metric's units (0.01 = one point of accuracy), got {shown(r.margin)}")
    if r.rank_by is not None and not own:
        bare = r.rank_by.removeprefix("test_")
        names = metric_refs.metric_names([m for m in r.metrics or [] if isinstance(m, str)], cfg.base_dir) or []
        if not known_metric(bare) and bare not in names:
            bad("report.rank_by", f"unknown metric {shown(r.rank_by)}{did_you_mean(bare, METRIC_NAMES + names)} (docs/metrics.md lists them; a metric of your own goes in report.metrics)")
        elif r.metrics is not None and bare not in names and bare != "acc":
            bad("report.rank_by", f"{bare!r} is not in report.metrics ({', '.join(map(str, r.metrics))}): add it there")
    if isinstance(e.compile, str) and e.compile not in COMPILE_MODES:
        bad("experiment.compile", f"expected true, false or a torch.compile mode ({', '.join(COMPILE_MODES)}), got {e.compile!r}{did_you_mean(e.compile, list(COMPILE_MODES))}")
    if d.disk_cache and d.cache == "none":
        bad("data.disk_cache", 'keeps the decoded tensor of data.cache; set data.cache = "memory" or "device"')
    for key in ("batch_size", "eval_batch_size"):
        if not 1 <= getattr(d, key) <= MAX_COUNT:  # DataLoader's islice takes at most sys.maxsize
            bad(f"data.{key}", f"expected 1 to 2**63 - 1, got {shown(getattr(d, key))}")
    if not 0 <= d.num_workers <= MAX_WORKERS:  # DataLoader would try to start them all (2**63 - 1 hung the run)
        bad("data.num_workers", f"expected 0 to {MAX_WORKERS} worker processes, got {d.num_workers}")
    if not 0 <= d.val_fraction < 1:
        bad("data.val_fraction", f"expected a share of train from 0 (no val split) to below 1, got {shown(d.val_fraction)}")
    for key in ("subset", "test_subset"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            bad(f"data.{key}", f"expected >= 1, got {getattr(d, key)}")
    base = cfg.base_dir
    problems += components.check_dataset(d.dataset, d.args, src, "data", base)
    problems += check_collate(d, src, "data.collate", base)
    for key in ("train_transforms", "eval_transforms"):
        found = components.check_transforms(getattr(d, key), src, f"data.{key}")
        problems += found
        if d.cache != "none" and not found:  # only what the cached path runs on the device

            for index, reason in check_specs(getattr(d, key), train=key == "train_transforms"):
                bad(f"data.{key}[{index}]", reason)
    if d.augment and d.train_transforms is not None:
        bad("data.train_transforms", "replaces the dataset's augmentation; set augment = false (or drop train_transforms)")
    if cfg.loss.name == head_losses.NAME:  # a loss per head: each head's checked as [loss] is
        problems += head_losses.check(cfg.loss.args, src, lambda name, args, key: components.check_loss(name, args, src, key, base))
    else:
        problems += components.check_loss(cfg.loss.name, cfg.loss.args, src, "loss", base)
    smoothing = cfg.loss.args.get("label_smoothing") if isinstance(cfg.loss.args, dict) else None
    # torch takes any float here and silently misbehaves (nan, -inf) or ignores it (-1): a share of the target mass
    if cfg.loss.name == "CrossEntropyLoss" and isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and not (math.isfinite(smoothing) and 0 <= smoothing <= 1):
        bad("loss.args.label_smoothing", f"expected a share from 0 to 1, got {shown(smoothing)}")
    for m in cfg.models:
        where = f"model.{m.name}"
        if m.device is not None and not DEVICE_PATTERN.match(m.device):
            bad(f"{where}.device", f"expected auto, cpu, cuda, cuda:N or mps, got {m.device!r}")
        problems += components.check_model(m.arch, m.args, src, where, base)
        problems += components.check_optimizer(m.optimizer.name, m.optimizer.args, src, f"{where}.optimizer")
        problems += finetune.check(m, src, where, base)
        problems += recipe.check_model(m, src, where, e.epochs)  # the scheduler (its warmup, "linear"/"cosine"), no_decay, clipping
    problems += recipe.check_experiment(cfg)  # accumulate

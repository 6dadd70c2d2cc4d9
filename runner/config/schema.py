"""The experiment config's schema: one dataclass per table, each field with its default (and
unit in a comment), and the limits on names. runner/assemble/validate.py fills and checks them.

From Python, `arch`, `data.dataset` and `loss.name` may also hold live objects (a class, a
factory, an instance; see runner/resolve/components.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from compare.config.seeds import derive_seed
from compare.errors import describe

PLACES = ("data", "models")  # experiment.place: the ways runner/run/placement.py knows
UNRECORDED = ("place",)  # keys config.toml leaves out (how the run was placed: env.json)
PRECISIONS = ("32", "bf16-mixed", "16-mixed")  # what autocast computes in (runner/engine/numerics.py maps them to dtypes)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Model and experiment names become directory names (tb/<model>/, runs/<name>/): no separators, no "..", nothing empty.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,=+\-\[\]]*$")
MAX_PATH_PART_BYTES = 255  # NAME_MAX: one folder or file name in a path
MAX_NAME_CHARS = 120  # file names derived from a model name (checkpoints, predictions) stay under 255 bytes


EARLY_STOPPING_METRICS = ("val_loss", "val_acc", "train_loss", "train_acc")  # never test_*: decisions read val
SELECT = ("final", "best_val")  # which epoch's test numbers the leaderboard reports
VAL_FIX = "set data.val_fraction = 0.1 (or give the dataset a val split)"


@dataclass
class EarlyStoppingConfig:
    metric: str = "val_loss"  # val_loss | val_acc | train_loss | train_acc (acc: higher is better)
    patience: int = 3  # epochs without improvement before the model leaves the pass
    min_delta: float = 0.0  # smallest change that counts as an improvement


@dataclass
class RaceConfig:
    """Racing (docs/racing.md): after each look, a model significantly worse on val than another stops."""

    metric: str = "val_acc"  # what is compared: top-1 correctness on val (exact McNemar per pair)
    alpha: float = 0.05  # family-wise error over every pair and every planned look
    min_epochs: int = 2  # the first look is after this epoch
    every: int = 1  # then every this many epochs


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
    race: RaceConfig | None = None  # stop models val shows to be worse (docs/racing.md); unset = no racing
    # Speed (docs/performance.md); the defaults keep plain fp32 numerics.
    precision: str | int = "32"  # 32 | bf16-mixed | 16-mixed (autocast; fp16 adds a GradScaler per model)
    channels_last: bool = False  # models and image batches in channels_last memory format
    # torch.compile every model: true (mode "default") or a mode name, e.g. "reduce-overhead" (CUDA
    # graphs: for tiny models whose step is launch-bound); falls back to eager, with a warning, where it fails
    compile: bool | str = False
    fuse: str = "off"  # off | on | auto: train same-architecture models as one vmapped group (auto: where measured faster)
    streams: str = "auto"  # off | on | auto: on CUDA each model (or fused group) on its own CUDA stream (auto: where measured faster)
    # Under torchrun (--nproc): data = every model on every rank, the batch split (DDP); models =
    # each rank its share of the models over the full batches (docs/scale-out.md). `--place` sets
    # it. How a run was placed is recorded in env.json, not config.toml: placement changes no
    # number, so a run placed any way has the same config (and config hash) as the one-process run.
    place: str = "data"
    accumulate: int = 1  # gradient accumulation: every model steps its optimizer every this many batches (effective batch = batch_size x accumulate)


@dataclass
class DataConfig:
    dataset: Any  # `compare list datasets`, or a reference: my_data.py:MyData (a DatasetAdapter)
    root: str = "data"  # where the dataset lives (relative to the working directory)
    download: bool = False  # let torchvision download it when missing
    batch_size: int = 64  # samples per training step
    eval_batch_size: int = 256  # samples per evaluation batch
    num_workers: int = 0  # DataLoader worker processes (0 = load in the main process)
    subset: int | None = None  # keep this many train samples (seeded choice); unset = all
    val_fraction: float = 0.0  # hold out this share of train (after `subset`) as the val split: stratified, seeded by experiment.seed; 0 = none
    test_subset: int | None = None  # keep this many test samples (seeded choice); unset = all
    augment: bool = False  # the dataset's train-time augmentation (e.g. crop + flip for CIFAR)
    cache: str = "none"  # none | memory | device: decode once into a tensor, batch and augment it on the device
    disk_cache: bool = False  # with cache: keep the decoded tensor under <root>/.compare-cache/ (keyed by content)
    args: dict = field(default_factory=dict)  # extra keyword arguments for the dataset
    # torchvision.transforms.v2 steps by name, [{ name = "RandomCrop", size = 32, padding = 4 }];
    # they replace the dataset's default steps for that split (unset: the defaults).
    train_transforms: list | None = None
    eval_transforms: list | None = None
    # a function of a list of dataset items -> (x, y) batch, e.g. "my_collate.py:pad" for sequences
    # of different lengths; unset = the DatasetAdapter's collate_fn, else torch's default_collate
    collate: Any = None


@dataclass
class LossConfig:
    name: Any = "CrossEntropyLoss"  # a torch.nn loss class or a reference; ONE object shared by all models
    args: dict = field(default_factory=dict)


DEFAULT_OPTIMIZER = {"name": "SGD", "lr": 0.01}  # a [[model]] without an optimizer table (a sweep of optimizer.lr starts from it)


@dataclass
class OptimizerConfig:
    name: str = "SGD"  # any torch.optim class
    args: dict = field(default_factory=lambda: {"lr": 0.01})  # its keyword arguments (lr, ...)
    no_decay: str | None = None  # "bias_and_norm": biases and normalization weights get weight_decay = 0 (runner/assemble/recipe.py)


@dataclass
class SchedulerConfig:
    name: str  # any torch.optim.lr_scheduler class
    interval: str = "epoch"  # step the scheduler after every "epoch" or every "step"
    args: dict = field(default_factory=dict)
    # linear warmup before the scheduler (torch's LinearLR then the scheduler in a SequentialLR), in optimizer steps
    # (interval = "step") or epochs (interval = "epoch"); the lr rises from warmup_start_factor x lr (unset: 0.01) to lr
    warmup_steps: int | None = None
    warmup_epochs: int | None = None
    warmup_start_factor: float | None = None


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
    family: str | None = None  # set by sweep/search expansion: the [[model]] table it came from; unset = its own name
    device: str | None = None  # cpu | cuda[:N] | mps: this model's own device; unset = experiment.device
    # Fine-tuning (runner/assemble/finetune.py): applied after the model is built, before its optimizer.
    init: str | None = None  # a state_dict file (torch.save) loaded into the built model; relative to the config's folder
    init_strict: bool = True  # init's keys and shapes must match the model's exactly; false: load what fits, one note for the rest
    freeze: list[str] = field(default_factory=list)  # parameter-name globs (fnmatch) set to requires_grad = False
    param_groups: list[dict] = field(default_factory=list)  # [{ params = "head.*", lr = 1e-2 }]: first match wins; the rest: the optimizer's args
    output: str | None = None  # this model's [report] output (an aux model beside plain ones); unset = [report] output
    clip_grad_norm: float | None = None  # clip the gradients' total L2 norm to this before each optimizer step (after fp16 unscaling); unset = no clipping
    clip_grad_value: float | None = None  # clamp each gradient entry to [-v, v] before each optimizer step; unset = no clamping


@dataclass
class ReportConfig:
    select: str = "final"  # final | best_val: the epoch whose test numbers the leaderboard reports
    metrics: list | None = None  # metric names (docs/metrics.md) kept as val_<m>/test_<m>; unset = the task's defaults
    rank_by: str | None = None  # the metric the leaderboard ranks by and best_val selects on; unset = the first of metrics (acc for classification)
    output: str | None = None  # where metrics find the prediction in a tuple/dict output: a key or a position; unset = docs/metrics.md's rule
    by: str = "model"  # model | family: "family" adds the family verdict (each family's best trial chosen on val) and tuning curves
    target: float | None = None  # with by = "family": the score whose budget (trials needed) each family's tuning curve reports
    margin: float | None = None  # > 0, in the ranked metric's units (0.01 = 1 point of accuracy): equivalent_to_best / non_inferior (TOST); unset = no such columns


@dataclass
class Config:
    experiment: ExperimentConfig
    data: DataConfig
    loss: LossConfig
    models: list[ModelConfig]
    source: str = "<config>"  # the file it came from, for messages
    references_from: Path | None = None  # `base_dir` of load_config: a run directory's copy resolves as its run did
    report: ReportConfig = field(default_factory=ReportConfig)
    spaces: dict = field(default_factory=dict)  # [spaces.<name>]: named search spaces (runner/config/search.py)
    families: dict = field(default_factory=dict)  # family -> how its points were made: sampler, trials, seed, space (set by expansion)

    def family(self, model: ModelConfig) -> str:
        return model.family or model.name

    @property
    def base_dir(self) -> Path:
        """Where relative file references (`my_model.py:Net`) start: the TOML file's folder,
        else (a dict) the working directory."""
        return self.references_from or (Path(".") if self.source.startswith("<") else Path(self.source).parent)

    @property
    def seeds(self) -> list[int]:
        return list(self.experiment.seeds) if self.experiment.seeds else [self.experiment.seed]

    def output(self, model: ModelConfig) -> str | None:
        """Where metrics find this model's prediction: its own `output`, else [report] output."""
        return model.output if model.output is not None else self.report.output

    def early_stopping(self, model: ModelConfig) -> EarlyStoppingConfig | None:
        return model.early_stopping or self.experiment.early_stopping

    def needs_val(self) -> list[tuple[str, str]]:
        """(key, what) for each training-time decision that reads the val split."""
        out = []
        if self.experiment.race is not None:
            out.append(("experiment.race", "racing compares the models on val"))
        if self.report.select == "best_val":
            out.append(("report.select", "'best_val' picks each model's epoch on val"))
        if self.report.by == "family":
            out.append(("report.by", "'family' picks each family's best trial on val"))
        for m in self.models:
            stop = self.early_stopping(m)
            if stop is not None and stop.metric.startswith("val_"):
                key = f"model.{m.name}.early_stopping" if m.early_stopping is not None else "experiment.early_stopping"
                out.append((key, f"early stopping on {stop.metric}"))
            if m.scheduler is not None and m.scheduler.name == "ReduceLROnPlateau":
                out.append((f"model.{m.name}.scheduler", "ReduceLROnPlateau steps on the val loss"))
        return list(dict.fromkeys(out))

    def model_seed(self, model: ModelConfig, experiment_seed: int | None = None) -> int:
        """A model's `seed` pins its stream in every repeat; else one per (experiment seed, name)."""
        if model.seed is not None:
            return model.seed
        return derive_seed(self.seeds[0] if experiment_seed is None else experiment_seed, model.name)

    def to_dict(self) -> dict:
        """The resolved config as plain TOML-able data (what `config.toml` in a run holds)."""

        def plain(obj) -> dict:  # live Python objects are written as "<python:module.QualName>"
            out = {f.name: plain(v) if isinstance(v := getattr(obj, f.name), (EarlyStoppingConfig, RaceConfig)) else v for f in fields(obj) if f.name not in UNRECORDED}
            for key in ("dataset", "name", "collate"):
                if key in out and out[key] is not None and not isinstance(out[key], str):
                    out[key] = describe(out[key])
            for key in ("train_transforms", "eval_transforms"):
                if out.get(key) is not None:
                    out[key] = [t if isinstance(t, dict) else describe(t) for t in out[key]]
            return out

        def with_name(spec) -> dict:  # {name = ..., **args}: the inline-table form users write
            out = {"name": spec.name, **spec.args}
            if isinstance(spec, SchedulerConfig):
                out["interval"] = spec.interval
            return out | {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in ("name", "args", "interval") and getattr(spec, f.name) is not None}

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
            if m.family is not None:
                entry["family"] = m.family
            if m.device is not None:
                entry["device"] = m.device
            for key in ("init", "freeze", "param_groups", "clip_grad_norm", "clip_grad_value"):
                if getattr(m, key):
                    entry[key] = getattr(m, key)
            if m.init is not None and not m.init_strict:
                entry["init_strict"] = False
            if m.output is not None:
                entry["output"] = m.output
            models.append(entry)
        return {
            "experiment": plain(self.experiment),
            "data": plain(self.data),
            "loss": plain(self.loss),
            "report": plain(self.report),
            "model": models,
        } | ({"spaces": self.spaces} if self.spaces else {}) | ({"families": self.families} if self.families else {})

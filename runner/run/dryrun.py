"""`compare run CONFIG --dry-run`: build what the run would build, push one batch through each
model, and say what the run will cost before spending it.

Per model (after sweep expansion): parameters, forward FLOPs per sample (counted by
torch.utils.flop_counter.FlopCounterMode in the slot factory's probe), the optimizer, and an estimate of training memory:
weights + gradients + optimizer state + the activations autograd saves for one batch. Each model
is built exactly as the run builds it (in its own random stream), goes through one forward and
backward pass on the first training batch (so shape and loss mistakes surface now), and is
discarded. Nothing is trained, nothing is written, and the caller's random state is untouched.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from compare import nested
from compare.resolve import components, metric_refs
from compare.config import search
from compare.config.schema import Config, ModelConfig
from compare.data.loaders import first_batches
from compare.data.splits import check_val_split
from compare.errors import CompareError, UserCodeError, describe, one_line
from compare.rundir.guard import holds_a_run
from compare.assemble import finetune, recipe
from compare.assemble.flops import probe_batch
from compare.assemble.preflight import check_batch_bytes, check_data_and_models, check_own_metrics, check_sample_shapes
from compare.assemble.slots import build_slot, data_task, model_device, resolve_device
from compare.engine import calling
from compare.engine.dist import Dist
from compare.metrics.builtin import defaults, rank_metric
from compare.metrics.outputs import shape_of
from compare.metrics import heads
from compare.metrics.tasks import Task
from compare.resolve.references import located
from compare.engine.rng import preserved_rng


# At most this much input goes through the probe: Pad(padding=1000) on 8x8 digits makes 16 MB
# samples, and a whole batch of them cost minutes and gigabytes; the estimate needs only a few.
PROBE_BYTES = 64 * 2**20
INPUT_SAMPLES = 16  # train samples whose shapes the plan reads where a collate function pads them


@dataclass
class ModelPlan:
    name: str
    arch: str
    params: int
    flops_per_sample: float  # forward pass; a training step costs about 3x
    optimizer: str
    output_shape: tuple[int, ...]  # for one batch
    memory: dict[str, int | None] = field(default_factory=dict)  # bytes: weights, gradients, optimizer_state, activations
    call: str = "model(x)"  # how it gets its input: model(x), or model(**x) (runner/engine/calling.py)
    heads: dict | None = None  # several heads: each head's prediction shape per sample (runner/metrics/heads.py)

    @property
    def memory_bytes(self) -> int:
        return sum(v for v in self.memory.values() if v is not None)


@dataclass
class Plan:
    experiment: str
    device: str
    dataset: str
    train_samples: int
    val_samples: int  # 0: no val split
    test_samples: int
    sources: dict[str, str]  # split -> where its samples come from
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    batches_per_epoch: int
    eval_batches: int
    epochs: int
    run_dir: Path
    run_dir_exists: bool
    models: list[ModelPlan]
    task: Task = Task("other")  # what the data and the loss pose (runner/metrics/tasks.py)
    metrics: list[str] = field(default_factory=list)  # kept as val_<m>/test_<m>
    rank: str = "loss"  # what the leaderboard will rank by
    families: list[str] = field(default_factory=list)  # each family's search space and budget (sweeps and searches)
    input_range: tuple[tuple[int, ...], ...] | None = None  # (smallest, largest) shape where samples differ in shape; None: all of input_shape
    input_seen: int = 0  # how many samples input_range was read from
    flops_shape: tuple[int, ...] = ()  # the one sample FLOPs per sample were counted on (the test split's first)
    accumulate: str | None = None  # with experiment.accumulate: the effective batch and optimizer steps per epoch
    input_structure: str | None = None  # one sample's shapes where the input is not one tensor: `{image: [1, 8, 8], meta: [2]}`

    def input_text(self) -> str:
        """The input as the plan shows it: `1x8x8`, or `variable (3..29 over the first 17 samples)`."""
        if self.input_structure is not None:
            return self.input_structure
        if self.input_range is None:
            return "x".join(str(s) for s in self.input_shape)
        low, high = self.input_range
        span = "x".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(low, high)) if len(low) == len(high) else "of different ranks"
        return f"variable ({span} over the first {self.input_seen} samples)"

    def flops_note(self) -> str | None:
        """How FLOPs per sample were counted, where inputs vary in size (None where they do not)."""
        if self.input_range is None:
            return None
        shape = "x".join(str(s) for s in self.flops_shape)
        return f"FLOPs/sample: counted on one sample (the test split's first, input {shape}); inputs vary in size, and so does a sample's cost"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"model": m.name, "arch": m.arch, "params": m.params, "flops_per_sample": m.flops_per_sample,
             "optimizer": m.optimizer, "output_shape": m.output_shape, "memory_mib": m.memory_bytes / 2**20}
            for m in self.models
        ])


def make_plan(cfg: Config, run_dir: Path) -> Plan:
    device = resolve_device(cfg.experiment.device)
    d = cfg.data
    if d.cache != "none":  # the steps data.cache cannot run fail now; nothing is decoded
        from compare.data.cache import check_input, plan_pipelines  # noqa: PLC0415

        plan_pipelines(components.build_adapter(d, cfg.base_dir), d, cfg.source)
    with preserved_rng():  # user code (adapter, loss, augmentation) may draw from any global generator
        data = components.load_dataset(d, cfg.base_dir, seed=cfg.experiment.seed)
        if d.cache != "none":  # a structured input with a random batch step: refused as the run refuses it
            check_input(components.build_adapter(d, cfg.base_dir), d, data.train[0][0], cfg.source)
        check_val_split(cfg, data.val is not None)
        loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
        check_sample_shapes(cfg, data)  # what the run refuses before it trains, refused now
        check_batch_bytes(cfg, data)
        check_data_and_models(cfg, data, [])
        probe = probe_size(cfg, data)
        [(x, y)] = first_batches(replace(cfg, data=replace(d, batch_size=probe)), cfg.seeds[0], data, device)  # the run's first batch (its first `probe` samples)
        item = nested.first(x) if hasattr(data.test, "pipeline") else data.test[0][0]  # as the dataset gives it (collate makes a tuple a list)
    models = [measure(cfg, m, data, x, y, loss_fn, model_device(cfg, m, device, Dist()), first=i == 0) for i, m in enumerate(cfg.models)]
    input_range, seen = shape_range(data)
    task = data_task(cfg, data, heads.Shape.of(models[0].output_shape[1:], models[0].heads), loss_fn) if models else Task("other")
    return Plan(
        experiment=cfg.experiment.name, device=str(device), dataset=describe(d.dataset),
        train_samples=len(data.train), val_samples=len(data.val) if data.val is not None else 0, test_samples=len(data.test),
        sources=dict(data.sources), input_shape=tuple(data.input_shape),
        num_classes=data.num_classes, batch_size=d.batch_size,
        batches_per_epoch=-(-len(data.train) // d.batch_size), eval_batches=-(-len(data.test) // d.eval_batch_size),
        epochs=cfg.experiment.epochs, run_dir=run_dir, run_dir_exists=holds_a_run(run_dir),
        models=models, task=task, metrics=(metrics := metric_refs.metric_names(cfg.report.metrics, cfg.base_dir) or defaults(task.kind, task.width)),
        rank=rank_metric(cfg.report.rank_by, task.kind, metrics),
        families=_families(cfg), input_range=input_range, input_seen=seen, flops_shape=tuple(getattr(probe_batch(data), "shape", (0,))[1:]),
        accumulate=recipe.accumulate_text(cfg, len(data.train)),
        input_structure=None if nested.is_tensor(x) else nested.shape_of(item),
    )


def _families(cfg: Config) -> list[str]:
    """Lines for the plan where the config has families of several trials (or asks by family)."""
    members: dict[str, list[str]] = {}
    for m in cfg.models:
        members.setdefault(cfg.family(m), []).append(m.name)
    if all(len(v) == 1 for v in members.values()) and cfg.report.by != "family":
        return []
    return search.family_lines(cfg.families, members)


def shape_range(data) -> tuple[tuple[tuple[int, ...], ...] | None, int]:
    """(smallest, largest) size of each input dimension over the first INPUT_SAMPLES train
    samples and the first test sample, where they differ (sequences a collate function pads;
    without one, samples of one size only get this far); None where they do not. And how many
    samples were read."""
    if getattr(data, "collate_fn", None) is None:
        return None, 0
    with preserved_rng():  # the train pipeline may draw random numbers
        shapes = [getattr(data.train[i][0], "shape", None) for i in range(min(INPUT_SAMPLES, len(data.train)))] + [getattr(probe_batch(data), "shape", (0,))[1:]]
    if any(s is None for s in shapes):  # not tensors: nothing to say about their shape
        return None, 0
    shapes = [tuple(s) for s in shapes]
    if len(set(shapes)) == 1:
        return None, len(shapes)
    if len({len(s) for s in shapes}) > 1:
        return ((), (0,)), len(shapes)  # samples of different ranks: shown as such
    return (tuple(map(min, zip(*shapes))), tuple(map(max, zip(*shapes)))), len(shapes)


def probe_size(cfg: Config, data) -> int:
    """How many samples of the first batch the probe pushes through each model: all of them,
    unless one batch's input would pass PROBE_BYTES (a Pad or Resize to thousands of pixels);
    then as many as fit (at least 2, for BatchNorm), and the activations are scaled up."""
    with preserved_rng():
        sample = data.train[0][0]
    each = sum(t.numel() * t.element_size() for t in nested.tensors(sample))  # every tensor of a structured input
    return max(2, min(cfg.data.batch_size, PROBE_BYTES // max(each, 1)))


def measure(cfg: Config, m: ModelConfig, data, x: torch.Tensor, y: torch.Tensor, loss_fn, device: torch.device, first: bool = False) -> ModelPlan:
    x, y = nested.to(x, device), nested.to(y, device)  # a model with a device of its own ([[model]] device)
    slot = build_slot(cfg, m, cfg.seeds[0], data.input_shape, data.num_classes, device, sample=probe_batch(data), train_size=len(data.train))  # the run's probe
    if first:  # as the run's slot factory does: the metrics of the user's own, called on the first model's predictions
        check_own_metrics(cfg, data, slot, data_task(cfg, data, slot.output_shape, loss_fn))
    model, params = slot.model, list(slot.model.parameters())
    saved = SavedTensorBytes(params)
    model.train()
    with slot.rng.active():
        try:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                logits = calling.call(model, x, slot.parts.spread)
        except CompareError:
            raise
        except Exception as err:  # noqa: BLE001 - the model does not fit the data: say so, per model
            raise UserCodeError(f"model {m.name}: the forward pass{' (model(**x))' if slot.parts.spread else ''} on a batch of shape {nested.shape_of(x)} raised {type(err).__name__}: {one_line(err)}{located(err)}") from err
        try:
            with warnings.catch_warnings():  # a broadcasting shape is refused, with both shapes, once the task is inferred
                warnings.filterwarnings("ignore", message="Using a target size")
                loss = loss_fn(logits, y)
            loss.backward()
        except Exception as err:  # noqa: BLE001
            shapes = f"output of shape {shape_of(logits, cfg.output(m))} and targets of shape {nested.shape_of(y)}"
            raise UserCodeError(f"model {m.name}: the loss or its backward pass on the {shapes} raised {type(err).__name__}: {one_line(err)}{located(err)}") from err
    memory = {
        "weights": sum(p.numel() * p.element_size() for p in params),
        "gradients": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        "optimizer_state": optimizer_state_bytes(slot.optimizer),
        "activations": saved.bytes * cfg.data.batch_size // nested.batch_size(x),  # probed on part of a batch: scaled to all of it
    }
    optimizer = " ".join([m.optimizer.name, *(f"{k}={v}" for k, v in m.optimizer.args.items())])
    if m.scheduler is not None:
        optimizer += recipe.scheduler_text(m)  # ` + warmup 100 steps + linear (per step)`
    optimizer += finetune.groups_text(m) + recipe.plan_text(m, slot.optimizer)  # every param_groups entry's lr: `; head.*: lr=0.5`; no_decay, clipping
    shape = shape_of(logits, cfg.output(m))
    shape = (cfg.data.batch_size, *shape[1:]) if shape and shape[0] == nested.batch_size(x) else shape  # the whole batch's
    return ModelPlan(m.name, slot.info["arch"], sum(p.numel() for p in params), slot.info["flops_per_sample"], optimizer, shape, memory, calling.shown(slot.parts.spread), getattr(slot.output_shape, "heads", None))


class SavedTensorBytes:
    """Bytes autograd keeps for the backward pass (each storage once, parameters not counted)."""

    def __init__(self, params: list[torch.Tensor]):
        self.seen = {p.untyped_storage().data_ptr() for p in params}
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
        except RuntimeError:  # tensors without storage (sparse, ...)
            return tensor
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def unpack(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int | None:
    """State the optimizer keeps per parameter (momentum, Adam moments), after one step on the
    throwaway model; None when its step needs more than gradients (e.g. LBFGS's closure)."""
    try:
        optimizer.step()
    except Exception:  # noqa: BLE001
        return None
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))

"""Checks that need the built data and models, run before any training step: a problem here
is one clear line, not a crash in the middle of epoch 1."""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves

from compare import nested
from compare.assemble.flops import probe_batch, probe_samples
from compare.engine import calling
from compare.data.splits import known_targets
from compare.engine.rng import preserved_rng
from compare.errors import DataError
from compare.metrics import own as own_metric
from compare.metrics.builtin import Kept
from compare.metrics.outputs import prediction
from compare.metrics.tasks import sample_stats
from compare.resolve import metric_refs

BATCH_BYTES = 2 * 2**30  # the most one batch of input may hold, estimated from one sample (docs/errors.md)
METRIC_PROBE = 64  # test samples a metric of the user's own is first called on, before training


def check_data_and_models(cfg, data, slots) -> None:
    n = len(data.train)
    if cfg.data.batch_size > n:
        raise DataError(f"{cfg.source}: data.batch_size: {cfg.data.batch_size} is larger than the {n} train samples")
    labels = [t for t in (known_targets(data.train), known_targets(data.test), known_targets(data.val) if getattr(data, "val", None) is not None else None) if t is not None and t.numel()]
    if not labels or any(t.is_floating_point() for t in labels):
        return
    ignore = (cfg.loss.args or {}).get("ignore_index") if isinstance(cfg.loss.args, dict) else None
    dense = any(t.ndim > 1 for t in labels)  # a label per pixel: the classes are the output's dim 1, ignore_index no class
    if dense and isinstance(ignore, int):
        labels = [t[t != ignore] for t in labels]
        labels = [t for t in labels if t.numel()]
        if not labels:
            return
    low, high = min(int(t.min()) for t in labels), max(int(t.max()) for t in labels)
    if low < 0:
        raise DataError(f"{cfg.data.dataset}: labels must be >= 0, found {low}")
    for slot in slots:
        shape = getattr(slot, "output_shape", None)
        outputs = shape[1] if dense and shape is not None and len(shape) > 2 else None if dense else slot.info.get("outputs")
        if outputs is not None and high >= outputs:
            raise DataError(f"{cfg.source}: model.{slot.name}: outputs {outputs} classes but the dataset has label {high}")


def check_sample_shapes(cfg, data) -> None:
    """Models are built for one input shape (a train sample's) and evaluated on val/test samples:
    data.train_transforms that end at another size (a train-only CenterCrop, Pad, Resize) would
    fail every model at its first evaluation, after a whole epoch of training."""
    if cfg.data.train_transforms is None or hasattr(data.test, "pipeline"):  # the cache checks its own steps
        return
    with preserved_rng():  # reading a sample may run user transforms that draw random numbers
        sample = data.test[0]
    x = sample[0] if isinstance(sample, (tuple, list)) and sample else None
    train = tuple(data.input_shape)
    if len(data.train) > 1:
        with preserved_rng():
            second = data.train[1]
        if isinstance(second, (tuple, list)) and hasattr(second[0], "shape") and tuple(second[0].shape) != train:
            return  # train samples differ among themselves: the collate's "different sizes" line says how to fix that
    if hasattr(x, "shape") and len(train) >= 2 and len(x.shape) == len(train) and tuple(x.shape) != train:
        raise DataError(
            f"{cfg.source}: data.train_transforms: train samples have shape {list(train)} but test samples {list(x.shape)}; "
            "models are evaluated on samples of the shape they train on: end data.eval_transforms at the same size"
        )


def check_sharding(cfg, data, world: int) -> None:
    """Under DDP each rank takes a slice of every global batch: no slice may be empty."""
    if world == 1:
        return
    n, batch = len(data.train), cfg.data.batch_size
    if batch < world or 0 < n % batch < world:
        raise DataError(
            f"{cfg.source}: data.batch_size: {batch} over {world} processes leaves a process without samples "
            f"({n} train samples: the last batch holds {n % batch or batch}); use a batch size of at least {world} "
            f"whose last batch has at least {world} samples (or set data.subset)"
        )


def check_batch_bytes(cfg, data) -> None:
    """One batch's input, estimated from one sample of each pipeline: a transform that makes
    samples huge (Pad(padding=1000) on 8x8 digits: 16 MB each) would allocate gigabytes for each
    collated batch and end on an allocation failure; above BATCH_BYTES it is refused now."""
    with preserved_rng():  # the train pipeline may draw random numbers
        train = data.train[0][0] if not hasattr(data.train, "pipeline") else None
    test = probe_batch(data)
    for key, size, n, x, one in (("data.batch_size", cfg.data.batch_size, len(data.train), test if train is None else train, train is None),
                                 ("data.eval_batch_size", cfg.data.eval_batch_size, len(data.test), test, True)):  # one: a batch of one
        tensors = [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]
        each, batch = sum(t.numel() * t.element_size() for t in tensors), min(size, n)
        if each * batch > BATCH_BYTES:
            shape = "x".join(map(str, tensors[0].shape[int(one):])) if len(tensors) == 1 else f"{len(tensors)} tensors"
            raise DataError(
                f"{cfg.source}: {key}: one batch of {batch:,} samples ({shape}, {each / 2**20:,.1f} MiB each) would hold "
                f"{each * batch / 2**30:,.1f} GiB of input, above the {BATCH_BYTES / 2**30:g} GiB a batch may take; "
                f"lower {key}, or the size data.train_transforms and data.eval_transforms make (a Pad or Resize)"
            )


def check_own_metrics(cfg, data, slot, task) -> None:
    """Every metric of the user's own, called as evaluation calls it, on `slot`'s predictions
    for the first METRIC_PROBE test samples (eval mode, no_grad, every random stream kept): one
    that raises, or returns the wrong type or shape, is refused before training (exit 2)."""
    own = metric_refs.user_metrics(cfg.report.metrics, cfg.base_dir)
    if not own:
        return
    if task.kind == "other":  # the loss only: the targets are all it keeps, whatever the model does
        for metric in own.values():
            own_metric.check_needs(metric, {"target"}, task.describe())
    batch = probe_samples(data, METRIC_PROBE)
    x, y = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (None, None)
    if x is None or not isinstance(y, torch.Tensor):  # structured targets: per-head metrics
        return
    model, modes = slot.model, {m: m.training for m in slot.model.modules()}
    try:
        model.eval()
        with torch.no_grad(), preserved_rng([slot.device]):
            pred = prediction(calling.call(model, nested.to(x, slot.device), slot.parts.spread), slot.parts.output_key)
            stats = sample_stats(task, pred, y.to(pred.device)) | {"target": y}
    except Exception:  # noqa: BLE001 - the model or the labels: the forward probe and the label check say it in their words
        return
    finally:
        for module, training in modes.items():
            module.training = training
    kept = Kept.of({k: v.cpu() for k, v in stats.items()}, task.width)
    for metric in own.values():
        own_metric.check_needs(metric, set(stats), task.describe())
        own_metric.check(metric, kept, f"on model {slot.name}'s predictions for the first {len(y)} test samples, before training")

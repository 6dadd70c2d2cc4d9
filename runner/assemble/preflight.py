"""Checks that need the built data and models, run before any training step: a problem here
is one clear line, not a crash in the middle of epoch 1."""
from __future__ import annotations

from runner.data.splits import known_targets
from runner.engine.rng import preserved_rng
from runner.errors import DataError


def check_data_and_models(cfg, data, slots) -> None:
    n = len(data.train)
    if cfg.data.batch_size > n:
        raise DataError(f"{cfg.source}: data.batch_size: {cfg.data.batch_size} is larger than the {n} train samples")
    labels = [t for t in (known_targets(data.train), known_targets(data.test), known_targets(data.val) if getattr(data, "val", None) is not None else None) if t is not None and t.numel()]
    if not labels or any(t.is_floating_point() for t in labels):
        return
    low, high = min(int(t.min()) for t in labels), max(int(t.max()) for t in labels)
    if low < 0:
        raise DataError(f"{cfg.data.dataset}: labels must be >= 0, found {low}")
    for slot in slots:
        outputs = slot.info.get("outputs")
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

"""Checks that need the built data and models, run before any training step: a problem here
is one clear line, not a crash in the middle of epoch 1."""
from __future__ import annotations

import torch

from runner.data.splits import known_targets
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

"""The validation split: which train samples are held out, and what a split's labels are.

Every training-time decision (early stopping, a plateau scheduler, the best epoch) reads val,
never test. When the dataset gives no val split of its own, `data.val_fraction` holds out a
seeded, stratified share of train: the same samples for every model and every seed, since
it depends only on the experiment's base seed.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from compare.config.schema import VAL_FIX, Config
from compare.config.seeds import derive_seed
from compare.errors import ConfigError, Problem

VAL_STREAM = "<val split>"  # the hold-out's seed is derived from (experiment seed, this name)


def known_targets(ds: Dataset) -> torch.Tensor | None:
    """The labels, where the dataset exposes them without decoding images."""
    if isinstance(ds, Subset):
        parent = known_targets(ds.dataset)
        return None if parent is None else parent[torch.as_tensor(ds.indices, dtype=torch.long)]
    if hasattr(ds, "tensors") and len(ds.tensors) > 1:
        return ds.tensors[1]
    targets = getattr(ds, "targets", None)
    return None if targets is None else torch.as_tensor(targets)


def targets_of(ds: Dataset) -> torch.Tensor:
    """Every label of `ds`: the exposed ones, else read item by item (decodes each sample once)."""
    known = known_targets(ds)
    return known if known is not None else torch.as_tensor([ds[i][1] for i in range(len(ds))])


def stratified_holdout(targets: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held): positions of `targets` split so that each class gives round(fraction * its
    size) samples to `held` (at least one sample in all, and one class member stays in train).
    Float targets (regression) are held out uniformly. Both lists are sorted."""
    generator = torch.Generator().manual_seed(derive_seed(seed, VAL_STREAM))
    n = len(targets)
    groups = [torch.arange(n)] if targets.is_floating_point() or targets.ndim != 1 else [torch.nonzero(targets == c).flatten() for c in torch.unique(targets)]
    held: list[int] = []
    for members in groups:
        take = min(round(fraction * len(members)), len(members) - 1)
        order = members[torch.randperm(len(members), generator=generator)]
        held += order[:take].tolist()
    if not held and n > 1:  # a tiny split: still one val sample
        held = [int(torch.randint(n, (1,), generator=generator))]
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], sorted(held)


def root_indices(ds: Dataset, positions: list[int]) -> list[int]:
    """`positions` in `ds` as indices into the dataset under its Subset wrappers (the adapter's
    own train split), so a reader of the run can check which samples were held out."""
    out = list(positions)
    while isinstance(ds, Subset):
        out = [int(ds.indices[i]) for i in out]
        ds = ds.dataset
    return out


def split_facts(data) -> dict:
    """What env.json records of the splits: sizes, classes and where each split came from."""
    return {
        "train_samples": len(data.train),
        "val_samples": len(data.val) if data.val is not None else 0,
        "test_samples": len(data.test),
        "classes": data.classes,
        "splits": dict(data.sources),
    }


def check_val_split(cfg: Config, has_val: bool) -> None:
    """Once the data is loaded: every decision that reads val needs a val split."""
    if has_val:
        return
    problems = [Problem(cfg.source, key, f"{what}, but the run has no val split; {VAL_FIX}") for key, what in cfg.needs_val()]
    if problems:
        raise ConfigError(problems)

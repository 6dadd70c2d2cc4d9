"""The dataset adapter: subclass it and override one method, `load_data`.

    class MyData(DatasetAdapter):
        def load_data(self):
            return train_dataset, test_dataset   # any torch Datasets of (image_tensor, label)
            # or: return train_dataset, val_dataset, test_dataset

The runner calls `prepare()`, which loads, reports the input shape and class names, and
applies the seeded `subset` / `test_subset` the config asks for, then `val_fraction`: a
seeded, stratified share of train held out as the val split (when load_data gives none). The
held-out samples go through the eval pipeline: prepare() calls load_data() a second time with
`transform(train=True)` returning the eval steps, where the two pipelines differ. Inside `load_data()`,
`self.transform(train=True/False)` is the split's image pipeline: ToImage -> the `[data]
train_transforms` / `eval_transforms` steps (else `default_transforms()`) -> float32 in [0, 1]
-> Normalize(`stats`). With `[data] cache`, the runner sets `decode_steps`: the pipeline then
stops at uint8 images (ToImage + deterministic resizes) and the rest runs on whole batches.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from compare.datasets.transforms import image_pipeline
from compare import nested
from compare.data.splits import root_indices, stratified_holdout, targets_of
from compare.errors import DataError


@dataclass
class PreparedData:
    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]  # (C, H, W) of one sample as the model receives it
    classes: list[str]
    val: Dataset | None = None  # what training-time decisions read; None: no val split
    val_indices: list[int] | None = None  # held-out indices into the adapter's train split
    sources: dict[str, str] = field(default_factory=dict)  # split -> where its samples came from
    collate_fn: Callable | None = None  # list of items -> (x, y) batch; None: torch's default_collate

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DatasetAdapter(abc.ABC):
    """Base of every dataset. `root`, `download` and `augment` come from `[data]`; other
    `[data] args` arrive as keyword arguments of the subclass's `__init__`."""

    classes: list[str] | None = None  # set in load_data() when the datasets carry no `.classes`
    stats: tuple | None = None  # per-channel (mean, std) transform() normalises with; None: no normalisation
    # `[data] train_transforms` / `eval_transforms`, built by the runner; None: default_transforms().
    train_transforms: list | None = None
    eval_transforms: list | None = None
    # `[data] cache`: {train: deterministic steps}; transform() is then ToImage + these alone.
    decode_steps: dict[bool, list] | None = None
    # Where a split's samples come from when it is not the obvious place (e.g. the test split
    # is a val/ folder); set in load_data(), shown in env.json and the dry-run plan.
    split_sources: dict[str, str] = {}
    # Batches of variable-length items: a method `def collate_fn(self, items)` returning (x, y), or
    # `collate_fn = staticmethod(pad)`; `[data] collate` replaces it. None: torch's default_collate.
    collate_fn = None
    _eval_view = False  # prepare(): transform(train=True) gives the eval pipeline (the val split)

    def __init__(self, root: str | Path = "data", download: bool = False, augment: bool = False):
        self.root = Path(root).expanduser()
        self.download = download
        self.augment = augment

    def default_transforms(self, train: bool) -> list:
        """The split's image steps when the config gives none (e.g. crop + flip when `augment`)."""
        return []

    def steps(self, train: bool) -> list:
        """The split's image steps: `[data] train_transforms` / `eval_transforms`, else the defaults."""
        configured = self.train_transforms if train else self.eval_transforms
        return list(configured) if configured is not None else self.default_transforms(train)

    def transform(self, train: bool):
        """The split's whole pipeline, for the datasets load_data() returns."""
        train = train and not self._eval_view
        if self.decode_steps is not None:
            self.decoded_splits.add(train)  # its items need the batch half of the pipeline
            return v2.Compose([v2.ToImage(), *self.decode_steps[train]])
        return image_pipeline(self.stats, self.steps(train))

    def decode_only(self, decode_steps: dict[bool, list]) -> None:
        """For `[data] cache` (the runner calls it before prepare()): transform(train) yields
        uint8 images, ToImage + `decode_steps[train]`; runner/data/batch_augment.py runs the random
        steps, ToDtype and Normalize later, on whole batches on the device."""
        self.decode_steps, self.decoded_splits = decode_steps, set()

    @property
    def transforms_configured(self) -> bool:
        return self.train_transforms is not None or self.eval_transforms is not None

    @abc.abstractmethod
    def load_data(self) -> tuple[Dataset, Dataset] | tuple[Dataset, Dataset, Dataset]:
        """Return (train, test), or (train, val, test), datasets yielding (image tensor, integer label)."""

    def prepare(self, subset: int | None = None, test_subset: int | None = None, seed: int = 0, val_fraction: float = 0.0) -> PreparedData:
        loaded = self._load()
        train, val, test = loaded if len(loaded) == 3 else (loaded[0], None, loaded[1])
        classes = self._classes(train)
        for name, ds in (("train", train), ("val", val), ("test", test)):
            if ds is not None and len(ds) == 0:
                raise DataError(f"{type(self).__name__}: the {name} split under {self.root} has 0 samples")
        first = train[0]
        if not (isinstance(first, (tuple, list)) and len(first) == 2 and nested.tensors(first[0])):
            kinds = ", ".join(type(v).__name__ for v in first) if isinstance(first, (tuple, list)) else type(first).__name__
            raise DataError(f"{type(self).__name__}: train[0] is ({kinds}); items must be (input, label), the input a tensor or a tuple/dict of tensors: pass self.transform(train=...) to the dataset")
        input_shape = tuple(nested.tensors(first[0])[0].shape)  # a structured input: its first tensor's (an image beside its metadata)
        sources = {"train": "the dataset's train split", "val": "the dataset's val split" if val is not None else "none", "test": "the dataset's test split"} | dict(self.split_sources)
        train = _seeded_subset(train, subset, seed)
        test = _seeded_subset(test, test_subset, seed + 1)
        val_indices = None
        if val is None and val_fraction > 0:
            several = isinstance(train[0][1], (Mapping, tuple, list))  # several heads: no one label to stratify on
            labels = torch.zeros(len(train)) if several else targets_of(train)  # float: held out uniformly
            kept, held = stratified_holdout(labels, val_fraction, seed)
            val = Subset(self._eval_view_of(train, subset, seed), held)
            val_indices = root_indices(train, held)
            train = Subset(train, kept)
            how = "uniform" if labels.is_floating_point() or labels.ndim != 1 else "stratified"
            sources["val"] = f"{len(held)} samples held out of train (val_fraction {val_fraction:g}, {how}, seed {seed})"
        return PreparedData(train, test, input_shape, classes, val, val_indices, sources, self.collate_fn)

    def _load(self) -> tuple:
        loaded = self.load_data()
        if not isinstance(loaded, (tuple, list)) or len(loaded) not in (2, 3):
            raise DataError(f"{type(self).__name__}.load_data() must return (train, test) or (train, val, test); got {type(loaded).__name__}")
        return tuple(loaded)

    def _eval_view_of(self, train: Dataset, subset: int | None, seed: int) -> Dataset:
        """`train` as the eval pipeline sees it: the same samples (the same seeded subset),
        loaded again with transform(train=True) giving the eval steps, where those differ."""
        steps = self.decode_steps if self.decode_steps is not None else {t: self.steps(t) for t in (True, False)}
        if [repr(s) for s in steps[True]] == [repr(s) for s in steps[False]]:
            return train
        self._eval_view = True
        try:
            again = self._load()[0]
        finally:
            self._eval_view = False
        return _seeded_subset(again, subset, seed)

    def _classes(self, train: Dataset) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        if getattr(train, "classes", None):
            return list(train.classes)
        targets = getattr(train, "targets", None)
        if targets is None and hasattr(train, "tensors"):
            targets = train.tensors[1]
        if targets is None and isinstance(train[0][1], (Mapping, tuple, list)):  # several heads: each head's task says its classes
            return []
        if targets is None:
            raise DataError(f"{type(self).__name__}: set self.classes in load_data(); the train dataset has no .classes or .targets")
        targets = torch.as_tensor(targets)
        if targets.ndim == 2 and targets.numel() and bool(((targets == 0) | (targets == 1)).all()):  # [N, L] of 0/1: L labels
            return [str(i) for i in range(targets.shape[1])]
        if targets.is_floating_point() or targets.ndim != 1:  # regression (or dense): no classes (docs/metrics.md)
            return []
        return [str(i) for i in range(int(targets.max()) + 1)]


def _seeded_subset(ds: Dataset, size: int | None, seed: int) -> Dataset:
    """A fixed random choice of `size` samples (same seed, same samples), kept in index order."""
    if size is None or size >= len(ds):
        return ds
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(ds, pick.sort().values.tolist())


class TransformedDataset(Dataset):
    """(x, y) items of `dataset` with `transform` applied to x; other attributes (`classes`,
    `targets`, ...) read through to the wrapped dataset."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        return self.transform(x), y

    def __getattr__(self, name):
        if name in ("dataset", "transform") or name.startswith("__"):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)

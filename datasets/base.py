"""The dataset adapter: subclass it and override one method, `load_data`.

    class MyData(DatasetAdapter):
        def load_data(self):
            return train_dataset, test_dataset   # any torch Datasets of (image_tensor, label)

The runner calls `prepare()`, which loads, reports the input shape and class names, and
applies the seeded `subset` / `test_subset` the config asks for. Inside `load_data()`,
`self.transform(train=True/False)` is the split's image pipeline: ToImage -> the `[data]
train_transforms` / `eval_transforms` steps (else `default_transforms()`) -> float32 in [0, 1]
-> Normalize(`stats`). With `[data] cache`, the runner sets `decode_steps`: the pipeline then
stops at uint8 images (ToImage + deterministic resizes) and the rest runs on whole batches.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from datasets.transforms import image_pipeline
from runner.errors import DataError


@dataclass
class PreparedData:
    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]  # (C, H, W) of one sample as the model receives it
    classes: list[str]

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
    def load_data(self) -> tuple[Dataset, Dataset]:
        """Return (train, test) datasets yielding (image tensor, integer label)."""

    def prepare(self, subset: int | None = None, test_subset: int | None = None, seed: int = 0) -> PreparedData:
        train, test = self.load_data()
        classes = self._classes(train)
        for name, ds in (("train", train), ("test", test)):
            if len(ds) == 0:
                raise DataError(f"{type(self).__name__}: the {name} split under {self.root} has 0 samples")
        first = train[0]
        if not (isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], torch.Tensor)):
            kinds = ", ".join(type(v).__name__ for v in first) if isinstance(first, (tuple, list)) else type(first).__name__
            raise DataError(f"{type(self).__name__}: train[0] is ({kinds}); items must be (image tensor, label): pass self.transform(train=...) to the dataset")
        input_shape = tuple(first[0].shape)
        train = _seeded_subset(train, subset, seed)
        test = _seeded_subset(test, test_subset, seed + 1)
        return PreparedData(train, test, input_shape, classes)

    def _classes(self, train: Dataset) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        if getattr(train, "classes", None):
            return list(train.classes)
        targets = getattr(train, "targets", None)
        if targets is None and hasattr(train, "tensors"):
            targets = train.tensors[1]
        if targets is None:
            raise DataError(f"{type(self).__name__}: set self.classes in load_data(); the train dataset has no .classes or .targets")
        return [str(i) for i in range(int(torch.as_tensor(targets).max()) + 1)]


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

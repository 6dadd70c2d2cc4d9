"""scikit-learn's bundled 8x8 handwritten digits: 1,797 images, offline, no download."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from compare.datasets.base import DatasetAdapter, TransformedDataset
from compare.datasets.registry import register_dataset
from compare.errors import DataError


@register_dataset("digits")
class Digits(DatasetAdapter):
    """A fixed stratified split (25% test, `split_seed` 0): the same 450 test images every run.
    Pixels are in [0, 1], not normalised; `[data] train_transforms` (e.g. RandomAffine) apply
    to the 1x8x8 tensors."""

    classes = [str(d) for d in range(10)]

    def __init__(self, root="data", download=False, augment=False, test_fraction: float = 0.25, split_seed: int = 0):
        super().__init__(root, download, augment)
        if augment:
            raise DataError("data.augment: digits has no built-in augmentation (8x8 images); set augment = false, or list data.train_transforms")
        self.test_fraction, self.split_seed = test_fraction, split_seed

    def load_data(self):
        from sklearn.datasets import load_digits  # noqa: PLC0415
        from sklearn.model_selection import train_test_split  # noqa: PLC0415

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixels 0..16 -> [0, 1]
        y = torch.tensor(bunch.target, dtype=torch.int64)
        train_idx, test_idx = train_test_split(
            torch.arange(len(y)).numpy(), test_size=self.test_fraction, stratify=bunch.target, random_state=self.split_seed
        )
        train, test = TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])
        if not self.transforms_configured:
            return train, test  # plain tensors, exactly what a hand-written loop would use
        return TransformedDataset(train, self.transform(train=True)), TransformedDataset(test, self.transform(train=False))

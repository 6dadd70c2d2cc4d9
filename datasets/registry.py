"""Dataset registry: `register_dataset`, `create_dataset`, `list_datasets`."""
from __future__ import annotations

from compare.registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, root="data", download=False, augment=False, **args):
    return DATASETS.get(name)(root=root, download=download, augment=augment, **args)


def list_datasets() -> list[str]:
    return DATASETS.names()

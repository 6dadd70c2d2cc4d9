"""compare's datasets: adapters that override `load_data()` and a registry of built-ins.

Note: this top-level package is named `datasets`, like Hugging Face's `datasets`. Install
compare in its own virtual environment; `runner` checks which one it imported.
"""
from compare.datasets.base import DatasetAdapter, PreparedData, TransformedDataset
from compare.datasets.registry import DATASETS, create_dataset, list_datasets, register_dataset

# Importing the modules registers the built-ins.
from compare.datasets import digits, folder, vision  # noqa: E402,F401

__all__ = ["DatasetAdapter", "PreparedData", "TransformedDataset", "DATASETS", "create_dataset", "list_datasets", "register_dataset"]

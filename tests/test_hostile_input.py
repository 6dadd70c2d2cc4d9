"""Hostile input: clear errors naming the file, key or path, before training where possible."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from compare.datasets import DatasetAdapter, register_dataset
from compare.errors import DataError
from tests.helpers import compare, digits_config, mlp, write


@register_dataset("test_labels_beyond_classes")
class LabelsBeyondClasses(DatasetAdapter):
    classes = [str(i) for i in range(10)]  # but one label says 12

    def load_data(self):
        x, y = torch.zeros(20, 1, 8, 8), torch.arange(20) % 10
        y[7] = 12
        return TensorDataset(x, y), TensorDataset(x[:4], y[:4])


def test_labels_out_of_range_for_the_model_fail_before_training(run):
    raw = digits_config([mlp("m")], batch_size=4)
    raw["data"]["dataset"] = "test_labels_beyond_classes"
    with pytest.raises(DataError, match="model.m: outputs 10 classes but the dataset has label 12"):
        run(raw)


def test_batch_larger_than_the_dataset(tmp_path):
    path = write(tmp_path, digits_config([mlp("m")], subset=50, batch_size=64))
    proc = compare("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: data.batch_size: 64 is larger than the 50 train samples"


def image_config(root, **data):
    raw = digits_config([mlp("m")], epochs=1, batch_size=4, eval_batch_size=4)
    raw["data"] |= {"dataset": "imagefolder", "root": str(root), "args": {"image_size": 16}} | data
    return raw


def test_corrupt_image_is_named(tmp_path, tiny_image_folder):
    (tiny_image_folder / "train" / "cat" / "0003.png").write_bytes(b"not a png")
    proc = compare("run", write(tmp_path, image_config(tiny_image_folder)), "--out", tmp_path / "out")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot read image {tiny_image_folder}/train/cat/0003.png (UnidentifiedImageError)"]


def test_empty_image_folder_is_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "cat").mkdir(parents=True)
    proc = compare("run", write(tmp_path, image_config(tmp_path / "empty")), "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "cannot read class folders in" in proc.stderr and "empty/train" in proc.stderr
    assert not (tmp_path / "out").exists()

"""Shared fixtures: tiny configs on digits, a tiny image-folder dataset, the real CIFAR tier."""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compare.assemble.validate import config_from_dict
from compare.run.experiment import Experiment
from tests.helpers import SHARED_DATA, digits_config, mlp

MINI_SHA256 = "165f0534f33d0776a9d92f10e936c5493f3f86ffcb7c5baef9633c35c3ecf89d"


@pytest.fixture
def run(tmp_path):
    """run(config_dict, name="run") -> RunResult, in a fresh directory under tmp_path.
    No PNGs (tests/report/test_plots.py covers them); everything else a run writes."""

    def go(raw: dict, name: str = "run", overrides=()):
        return Experiment(config_from_dict(raw, overrides=list(overrides))).run(tmp_path / name, plots=False)

    return go


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """root/{train,test}/{cat,dog}/*.png, 32x32 RGB: the CIFAR ImageFolder layout in miniature."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tiny-cifar"
    for split, count in (("train", 12), ("test", 4)):
        for label, cls in enumerate(("cat", "dog")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 128, (32, 32, 3), dtype=np.uint8) + 100 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def cifar_mini(tmp_path_factory) -> Path:
    """The real CIFAR-10 JPEG subset from ../shared/data, extracted once per session."""
    archive = SHARED_DATA / "cifar10-mini.tar.gz"
    if not archive.exists():
        pytest.skip(f"real-data tier: {archive} is absent (a fresh clone has no ../shared/data)")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert digest == MINI_SHA256, f"{archive} has sha256 {digest}, expected {MINI_SHA256}"
    out = tmp_path_factory.mktemp("cifar")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / "cifar10-mini"


@pytest.fixture(scope="session")
def seeded_run(tmp_path_factory) -> Path:
    """A finished 3-seed run of three tiny models, plots and TensorBoard views included:
    two that learn, one that cannot (lr = 0), so the paired test has both kinds of answer."""
    raw = digits_config([mlp("fast", lr=0.2), mlp("slow", lr=0.05, dropout=0.0), mlp("stuck", lr=0.0)], epochs=2)
    raw["experiment"]["seeds"] = [0, 1, 2]
    out = tmp_path_factory.mktemp("seeded") / "run"
    Experiment(config_from_dict(raw)).run(out)
    return out


@pytest.fixture(scope="session")
def two_model_run(tmp_path_factory):
    """A finished one-epoch run of two tiny models (a, b): checkpoint, TensorBoard logs, no PNGs.
    Shared by the edge tests, which plant things in private copies (`two_model_run_copy`)."""
    raw = digits_config([mlp("a"), mlp("b")], epochs=1, batch_size=100, eval_batch_size=100, subset=300, test_subset=100)
    raw["experiment"]["grad_histograms"] = False
    out = tmp_path_factory.mktemp("two_model_run") / "run"
    Experiment(config_from_dict(raw)).run(out, plots=False)
    return out


@pytest.fixture
def two_model_run_copy(two_model_run, tmp_path):
    """A private copy of `two_model_run` (links kept as links), to damage or plant things in."""
    import shutil  # noqa: PLC0415

    copy = tmp_path / "run"
    shutil.copytree(two_model_run, copy, symlinks=True)
    return copy

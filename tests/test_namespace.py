"""compare installs under one import namespace, `compare` (runner/ -> compare, models/ ->
compare.models, datasets/ -> compare.datasets), so that Hugging Face's `datasets` can be
installed and imported beside it (docs/architecture.md "One import namespace")."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import ROOT, compare, digits_config, mlp, write

ADAPTER = '''import datasets
import torch
from torch.utils.data import TensorDataset
from sklearn.datasets import load_digits
from compare.datasets import DatasetAdapter


class Digits(DatasetAdapter):
    classes = [str(i) for i in range(10)]

    def load_data(self):
        assert datasets.load_dataset() == "hugging face", datasets.__file__  # the other package, not compare's
        x, y = load_digits(return_X_y=True)
        x, y = torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y)
        return TensorDataset(x[300:], y[300:]), TensorDataset(x[:300], y[:300])
'''


def hugging_face_stand_in(tmp_path) -> dict:
    """A package importable as `datasets` that is not compare's (as Hugging Face's would be)."""
    package = tmp_path / "site" / "datasets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def load_dataset(*args, **kwargs):\n    return 'hugging face'\n")
    return os.environ | {"PYTHONPATH": str(tmp_path / "site")}


def test_pyproject_installs_every_package_under_compare_and_nothing_else():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    subpackages = {p.name for p in (ROOT / "runner").iterdir() if (p / "__init__.py").exists()}
    assert set(setup["packages"]) == {"compare", "compare.models", "compare.datasets"} | {f"compare.{s}" for s in subpackages}
    assert setup["package-dir"] == {"compare": "runner", "compare.models": "models", "compare.datasets": "datasets"}


def test_the_other_datasets_and_compare_import_in_one_process(tmp_path):
    code = "import datasets, compare.datasets as ours; print(datasets.load_dataset(), ours.DatasetAdapter.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=hugging_face_stand_in(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["hugging", "face", "compare.datasets.base"], proc.stderr


def test_the_real_hugging_face_datasets_beside_compare(tmp_path):
    code = "import datasets, compare.datasets as ours; print(datasets.__version__, hasattr(datasets, 'load_dataset'), ours.DatasetAdapter.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if "No module named 'datasets'" in proc.stderr:
        pytest.skip("Hugging Face `datasets` is not installed here (make test installs it: the [hf] extra)")
    assert proc.stdout.split()[1:] == ["True", "compare.datasets.base"], proc.stderr


@pytest.mark.parametrize("cwd", ["repository", "elsewhere"])
def test_a_user_dataset_file_uses_the_other_datasets_and_compare_together(tmp_path, cwd):
    """From the checkout's root too: `python -m compare` puts the working directory last, so its
    datasets/ folder does not shadow the installed package."""
    (tmp_path / "data.py").write_text(ADAPTER)
    raw = digits_config([mlp("a")], epochs=1)
    raw["data"] = {"dataset": "data.py:Digits", "batch_size": 64}
    proc = compare("run", write(tmp_path, raw), "--dry-run", cwd=ROOT if cwd == "repository" else tmp_path, env=hugging_face_stand_in(tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("other", ["as installed here", "a stand-in"])
def test_the_old_import_is_one_line_naming_the_new_one(tmp_path, other):
    """With no `datasets` installed (ModuleNotFoundError) or another one (cannot import name)."""
    (tmp_path / "data.py").write_text(ADAPTER.replace("from compare.datasets import DatasetAdapter", "from datasets import DatasetAdapter").replace("import datasets\n", "", 1))
    raw = digits_config([mlp("a")], epochs=1)
    raw["data"] = {"dataset": "data.py:Digits", "batch_size": 64}
    env = hugging_face_stand_in(tmp_path) if other == "a stand-in" else None
    proc = compare("run", write(tmp_path, raw), "--dry-run", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.py" in lines[0] and "`from compare.datasets import DatasetAdapter`" in lines[0], lines

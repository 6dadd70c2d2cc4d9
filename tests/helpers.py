"""What tests share: tiny digits configs, the `compare` CLI in a subprocess, and the test
launcher (tests/launcher.py: test-only models and kill switches). Fixtures are in conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from compare.config import tomlio

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LAUNCHER = ROOT / "tests" / "launcher.py"
METRICS = ["model", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean", "grad_norm_max", "lr", "status"]


def digits_config(models: list[dict], epochs: int = 2, seed: int = 0, **data) -> dict:
    return {
        "experiment": {"name": "t", "seed": seed, "epochs": epochs, "device": "cpu"},
        "data": {"dataset": "digits", "batch_size": 64, "eval_batch_size": 128} | data,
        "loss": {"name": "CrossEntropyLoss"},
        "model": models,
    }


def mlp(name: str, dropout: float = 0.2, lr: float = 0.1, **extra) -> dict:
    return {"name": name, "arch": "mlp", "args": {"hidden": [32], "dropout": dropout}, "optimizer": {"name": "SGD", "lr": lr}} | extra


def compare(*args, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compare", *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def launch(*args, env=None, wait=True):
    """`compare ARGS` through tests/launcher.py. A run or resume writes no PNGs unless the test
    passes --plots (plotting costs seconds per run; tests/report/test_plots.py covers it)."""
    full_env = os.environ | (env or {})
    args = [str(a) for a in args]
    if args and args[0] in ("run", "resume") and not {"--plots", "--no-plots", "--dry-run"} & set(args):
        args.append("--no-plots")
    cmd = [sys.executable, str(LAUNCHER), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def killable(name: str, **extra) -> dict:
    return {"name": name, "arch": "test_mlp", "args": {"hidden": [32], "dropout": 0.3}, "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9}} | extra


def explodes(name: str, mode: str, steps: int = 3) -> dict:
    return {"name": name, "arch": "test_explodes", "args": {"steps": steps, "mode": mode}}


def write_config(tmp_path, models, epochs=3, data: dict | None = None, **experiment) -> str:
    raw = digits_config(models, epochs=epochs, batch_size=100, eval_batch_size=100, **(data or {}))
    raw["experiment"] |= experiment
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def history(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[METRICS]


def write(tmp_path, raw: dict):
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def cli(*args):
    """The `compare` CLI in this process (typer's test runner): what `compare ARGS` prints and
    exits with, at a fraction of a subprocess's cost. Result has exit_code, stdout, stderr."""
    from typer.testing import CliRunner  # noqa: PLC0415
    from compare.cli.main import application  # noqa: PLC0415

    return CliRunner().invoke(application(), [str(a) for a in args])


def plain_loop(model, optim, train, test, batch_size: int, seed: int, epochs: int, eval_batch_size: int, after_train_mode=None) -> pd.DataFrame:
    """The loop users write by hand (DESIGN.md, "Plain-loop equivalence"): per epoch, one
    seeded shuffled pass with the shared loss, then the test set in order under eval() and
    no_grad(). `after_train_mode(model)` runs after each model.train() (a frozen BatchNorm's
    eval()). Returns epoch, train_loss, test_loss, test_acc per epoch."""
    import torch  # noqa: PLC0415 - helpers stay importable without torch for the config tests
    from torch import nn  # noqa: PLC0415
    from torch.utils.data import DataLoader  # noqa: PLC0415

    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    expected = []
    for epoch in range(1, epochs + 1):
        model.train()
        if after_train_mode is not None:
            after_train_mode(model)
        total, seen = 0.0, 0
        for imgs, targets in loader:
            loss = loss_fn(model(imgs), targets)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.item() * len(targets)
            seen += len(targets)
        model.eval()
        test_loss, correct = 0.0, 0
        with torch.no_grad():
            for imgs, targets in DataLoader(test, batch_size=eval_batch_size):
                out = model(imgs)
                test_loss += loss_fn(out, targets).item() * len(targets)
                correct += (out.argmax(1) == targets).sum().item()
        expected.append({"epoch": epoch, "train_loss": total / seen, "test_loss": test_loss / len(test), "test_acc": correct / len(test)})
    return pd.DataFrame(expected)


# scikit-learn's bundled and generated data as DatasetAdapters, written into a test's folder as a
# data file (`data.py:Diabetes`); sizes are [data] args where a test wants another one.
SKLEARN_ADAPTERS = '''
import torch
from torch.utils.data import TensorDataset
from sklearn import datasets as sk
from compare.datasets.base import DatasetAdapter


def split(x, y, n_test):
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    return TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test])


class Diabetes(DatasetAdapter):
    def load_data(self):
        x, y = sk.load_diabetes(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        return split(x, torch.as_tensor((y - y.mean()) / y.std(), dtype=torch.float32), 120)


class Imbalanced(DatasetAdapter):
    def load_data(self):
        x, y = sk.make_classification(1200, n_features=8, weights=[0.95, 0.05], flip_y=0, class_sep=1.5, random_state=0)
        return split(x, torch.as_tensor(y), 400)


class MultiLabel(DatasetAdapter):
    classes = ["a", "b", "c", "d", "e"]

    def __init__(self, samples=900, n_test=300, **kw):
        super().__init__(**kw)
        self.samples, self.n_test = samples, n_test

    def load_data(self):
        x, y = sk.make_multilabel_classification(self.samples, n_features=12, n_classes=5, random_state=0)
        return split(x / x.max(), torch.as_tensor(y, dtype=torch.float32), self.n_test)


class Blobs(DatasetAdapter):
    """100 classes, some of them close to each other (so there are confused pairs)."""

    def __init__(self, samples=3000, features=16, std=2.0, n_test=1000, **kw):
        super().__init__(**kw)
        self.samples, self.features, self.std, self.n_test = samples, features, std, n_test

    def load_data(self):
        x, y = sk.make_blobs(self.samples, n_features=self.features, centers=100, cluster_std=self.std, random_state=0)
        return split((x - x.mean(0)) / x.std(0), torch.as_tensor(y), self.n_test)
'''


# A small MLP as a model file's text (`models.py:MLP`): `features` in, `outputs` out (`squeeze`: [B]).
MLP_MODEL = '''
from torch import nn


class MLP(nn.Module):
    def __init__(self, features, outputs=1, hidden=32, squeeze=False):
        super().__init__()
        self.net, self.squeeze = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, outputs)), squeeze

    def forward(self, x):
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out
'''

"""What the data says about classes, and metrics checked against the task before training
(issue 33, items 4 and 5), from the command line: `[N, L]` 0/1 float targets are a multi-label
task with L labels and no hand-written `classes`; an `args.num_classes` that agrees with the data
is accepted; a model that asks for `num_classes` in regression, and a metric of the user's own
that needs what the task does not keep, are exit 2 with one line, before anything is written."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from compare.config import tomlio
from tests.helpers import cli

DATA_PY = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset
from sklearn import datasets as sk
from compare.datasets.base import DatasetAdapter

def split(x, y, n_test):
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test])

class Labels(DatasetAdapter):  # [N, 5] float 0/1 targets, no classes list
    def load_data(self):
        x, y = sk.make_multilabel_classification(600, n_features=12, n_classes=5, random_state=0)
        return split(x / x.max(), y, 200)

class Diabetes(DatasetAdapter):
    def load_data(self):
        x, y = sk.load_diabetes(return_X_y=True)
        return split((x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std(), 100)

class Packed(DatasetAdapter):  # a class bit and a value packed in one target: task "other"
    classes = []
    def load_data(self):
        x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
        y = torch.stack([x[:, 0] > 0, x[:, 1]], 1).float()
        return TensorDataset(x[100:], y[100:]), TensorDataset(x[:100], y[:100])

class Net(nn.Module):
    def __init__(self, num_classes, features=12):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes))
    def forward(self, x):
        return self.net(x)

class Outputs(nn.Module):
    def __init__(self, outputs=1, features=10):
        super().__init__()
        self.net = nn.Linear(features, outputs)
    def forward(self, x):
        return self.net(x).squeeze(-1)

class Three(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(6, 3)
    def forward(self, x):
        return self.net(x)

class Loss(nn.Module):
    def forward(self, out, y):
        return nn.functional.cross_entropy(out[:, :2], y[:, 0].long()) + nn.functional.mse_loss(out[:, 2], y[:, 1])
'''

METRICS_PY = '''
from compare.metrics.builtin import Metric

hits = Metric("hits", tasks=(), needs=("top1",), higher=True, family="additive",
              definition="top-1 hits", per_sample=lambda k: (k.stats["top1"] == k.target).astype(float))
'''


def config(tmp, dataset: str, models: list[dict], loss: str, **report) -> str:
    (tmp / "data.py").write_text(DATA_PY)
    (tmp / "m.py").write_text(METRICS_PY)
    raw = {
        "experiment": {"name": "t", "seed": 0, "epochs": 2, "device": "cpu"},
        "data": {"dataset": f"data.py:{dataset}", "batch_size": 50, "eval_batch_size": 100},
        "loss": {"name": loss},
        "model": [{"optimizer": {"name": "Adam", "lr": 0.01}} | m for m in models],
    } | ({"report": report} if report else {})
    path = tmp / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def test_float_zero_one_targets_are_multilabel_with_their_label_count_and_an_agreeing_num_classes(tmp_path):
    cfg = config(tmp_path, "Labels", [{"name": "a", "arch": "data.py:Net"}, {"name": "b", "arch": "data.py:Net", "args": {"num_classes": 5}}], "BCEWithLogitsLoss")
    plan = cli("run", cfg, "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    assert "task: multi-label classification (5 labels)" in plan.stdout and "50x5" in plan.stdout
    assert "input 12, 5 labels" in plan.stdout  # the data line counts labels, not classes
    done = cli("run", cfg, "--out", tmp_path / "run", "-q", "--no-plots")
    assert done.exit_code == 0, done.stderr
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("model")
    assert set(board.index) == {"a", "b"} and board["outputs"].tolist() == [5, 5]
    # micro-F1 from the saved test scores, against scikit-learn
    with np.load(tmp_path / "run" / "predictions" / "a" / "seed_0.npz") as kept:
        score, target = kept["final.score"], kept["target"]
    assert score.shape == target.shape == (200, 5)
    assert abs(board.at["a", "test_micro_f1_mean"] - f1_score(target, score >= 0.5, average="micro")) < 1e-6
    wrong = cli("run", cfg, "--dry-run", "--set", "model.b.args.num_classes=4")
    assert wrong.exit_code == 2 and "model.b.args.num_classes: 4, but the dataset has 5 classes" in wrong.stderr, wrong.stderr


def test_a_model_that_asks_for_num_classes_in_regression_is_refused_with_one_line(tmp_path):
    cfg = config(tmp_path, "Diabetes", [{"name": "a", "arch": "data.py:Net", "args": {"features": 10}}], "MSELoss")
    for args in (["--dry-run"], ["--out", tmp_path / "run", "-q", "--no-plots"]):
        refused = cli("run", cfg, *args)
        assert refused.exit_code == 2, refused.stdout + refused.stderr
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "model.a.arch: data.py:Net takes num_classes, but the dataset has no classes" in line and "regression" in line, line
    assert not (tmp_path / "run" / "history.csv").exists()
    fine = cli("run", config(tmp_path, "Diabetes", [{"name": "a", "arch": "data.py:Outputs"}], "MSELoss"), "--dry-run")
    assert fine.exit_code == 0 and "task: regression (1 output)" in fine.stdout, fine.stderr


def test_a_metric_needing_what_the_task_does_not_keep_is_refused_before_training(tmp_path):
    cfg = config(tmp_path, "Packed", [{"name": "a", "arch": "data.py:Three"}], "data.py:Loss", metrics=["m.py:hits"])
    for args in (["--dry-run"], ["--out", tmp_path / "run", "-q", "--no-plots"]):
        refused = cli("run", cfg, *args)
        assert refused.exit_code == 2, refused.stdout + refused.stderr
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "metric 'hits' needs top1, which the task, other (no metric but the loss), does not keep; it keeps target" in line, line
    assert not (tmp_path / "run").exists()
    # the same metric on a regression task: what that task keeps is named
    reg = cli("run", config(tmp_path, "Diabetes", [{"name": "a", "arch": "data.py:Outputs"}], "MSELoss", metrics=["rmse", "m.py:hits"]), "--dry-run")
    assert reg.exit_code == 2 and "metric 'hits' needs top1, which the task, regression (1 output), does not keep; it keeps pred, target" in reg.stderr, reg.stderr

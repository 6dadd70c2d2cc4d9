"""Every task, every metric, end to end on scikit-learn's bundled data: regression
(load_diabetes), imbalanced binary ranked by macro-F1, multi-label with tuple and dict outputs,
100 classes ranked by top-5, and the kept weights reproducing the saved predictions."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import SKLEARN_ADAPTERS, launch

MODELS = '''
import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, features, outputs=1, squeeze=True):
        super().__init__()
        self.fc, self.squeeze = nn.Linear(features, outputs), squeeze

    def forward(self, x):
        out = self.fc(x)
        return out.squeeze(-1) if self.squeeze else out


class MLP(nn.Module):
    def __init__(self, features, outputs=1, hidden=32, squeeze=True):
        super().__init__()
        self.net, self.squeeze = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, outputs)), squeeze

    def forward(self, x):
        out = self.net(x)
        return out.squeeze(-1) if self.squeeze else out


class Majority(nn.Module):
    """Always the majority class: its one parameter never reaches the output."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.tensor([4.0, -4.0]).expand(len(x), 2) + 0 * self.unused


class TwoHeads(nn.Module):
    """Main and auxiliary logits, as Inception or GoogLeNet return them in training."""

    def __init__(self, features, outputs, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.main, self.aux = nn.Linear(hidden, outputs), nn.Linear(hidden, outputs)

    def forward(self, x):
        h = self.body(x)
        return self.main(h), self.aux(h)


class DictOut(TwoHeads):
    """A Hugging Face-style output: a dict with `logits`."""

    def forward(self, x):
        main, aux = super().forward(x)
        return {"aux": aux, "logits": main}


def with_aux(output, target):
    """The shared loss sees the output as the model returned it."""
    main_loss = nn.functional.binary_cross_entropy_with_logits if target.is_floating_point() else nn.functional.cross_entropy
    if isinstance(output, dict):
        return main_loss(output["logits"], target) + 0.3 * main_loss(output["aux"], target)
    if isinstance(output, tuple):
        return main_loss(output[0], target) + 0.3 * main_loss(output[1], target)
    return main_loss(output, target)
'''


def toml(tmp_path, name: str, dataset: str, loss: str, models: list[str], report: str = "", epochs: int = 3, loss_args: str = "", experiment: str = "") -> str:
    (tmp_path / "tasks_data.py").write_text(SKLEARN_ADAPTERS)
    (tmp_path / "tasks_models.py").write_text(MODELS)
    text = f"""
[experiment]
name = "{name}"
epochs = {epochs}
device = "cpu"
output_dir = "{tmp_path / 'runs'}"
{experiment}

[data]
dataset = "tasks_data.py:{dataset}"
batch_size = 32
val_fraction = 0.2

[loss]
name = "{loss}"
{loss_args}

[report]
{report}
""" + "\n".join(models)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def model(name: str, arch: str, args: str, lr: float = 0.05) -> str:
    return f'[[model]]\nname = "{name}"\narch = "tasks_models.py:{arch}"\nargs = {{ {args} }}\noptimizer = {{ name = "Adam", lr = {lr} }}\n'


def run_ok(*args):
    result = launch(*args)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    return result


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regression")
    cfg = toml(tmp, "diabetes", "Diabetes", "MSELoss", [model("linear", "Linear", "features = 10"), model("mlp", "MLP", "features = 10, hidden = 64", 0.01)], epochs=6)
    dry = run_ok("run", cfg, "--dry-run")
    result = run_ok("run", cfg, "--plots")
    return tmp / "runs" / "diabetes", result, dry


def test_regression_ranks_by_rmse_with_evidence(regression):
    run, result, dry = regression
    assert "task: regression (1 output)" in dry.stdout and "classes" not in dry.stdout.split("task:")[0].split("data:")[1]
    assert "uniform" in dry.stdout and "stratified" not in dry.stdout
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["test_rmse_mean"]) == sorted(board["test_rmse_mean"])  # lower is better
    assert np.isfinite(board[["test_rmse_ci95_low", "test_rmse_ci95_high"]].to_numpy()).all()
    second = board.iloc[1]
    assert 0 < second["p_vs_best"] <= 1 and np.isfinite(second["mde_vs_best"])
    assert "ranked by test_rmse" in result.stdout and "sign-flip" in result.stdout
    history = pd.read_csv(run / "history.csv")
    assert {"val_rmse", "test_rmse", "test_mae", "test_r2"} <= set(history.columns)
    assert (run / "plots" / "regression.png").is_file() and (run / "plots" / "grad_norms.png").is_file()
    assert not (run / "plots" / "calibration.png").exists() and "they fit another task than regression: confusion_matrices.png" in result.stdout + result.stderr
    env = json.loads((run / "env.json").read_text())
    assert env["task"]["kind"] == "regression" and env["classes"] == []


def test_kept_weights_reproduce_the_saved_predictions(regression):
    run, _, _ = regression
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("tasks_models_check", run.parent.parent / "tasks_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    data_spec = importlib.util.spec_from_file_location("tasks_data_check", run.parent.parent / "tasks_data.py")
    data = importlib.util.module_from_spec(data_spec)
    data_spec.loader.exec_module(data)
    _, test = data.Diabetes().load_data()
    saved = np.load(run / "predictions" / "mlp" / "seed_0.npz")
    for key in ("final", "best_val"):
        net = module.MLP(10, hidden=64)
        net.load_state_dict(torch.load(run / "models" / "mlp" / f"{key}.pt", weights_only=True))
        net.eval()
        with torch.no_grad():
            pred = net(test.tensors[0]).numpy()
        np.testing.assert_allclose(pred, saved[f"{key}.pred"][:, 0], rtol=1e-5, atol=1e-6)


def test_imbalanced_binary_majority_ranks_last_on_macro_f1(tmp_path):
    cfg = toml(tmp_path, "imbalanced", "Imbalanced", "CrossEntropyLoss",
               [model("majority", "Majority", ""), model("mlp", "MLP", "features = 8, outputs = 2, squeeze = false", 0.01)],
               report='rank_by = "macro_f1"\nmetrics = ["macro_f1", "balanced_acc", "auroc", "average_precision"]', loss_args="args = { weight = [1.0, 19.0] }",
               experiment='race = { metric = "val_macro_f1", alpha = 0.05, min_epochs = 1 }')
    result = run_ok("run", cfg)
    run = tmp_path / "runs" / "imbalanced"
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["model"]) == ["mlp", "majority"]
    assert board.iloc[1]["p_vs_best"] < 0.05 and "paired bootstrap" in result.stdout
    assert board.iloc[1]["test_acc_mean"] > 0.9  # accuracy alone would have called it good
    assert board.iloc[1]["status"] == "eliminated" and board.iloc[1]["eliminated_by"].startswith("mlp")  # raced on val_macro_f1
    history = pd.read_csv(run / "history.csv")
    assert (history[history["model"] == "majority"]["test_auroc"] == 0.5).all()
    from sklearn.metrics import f1_score

    per_class = launch("leaderboard", run, "--per-class", "--format", "csv")
    rows = pd.read_csv(__import__("io").StringIO(per_class.stdout))
    saved = np.load(run / "predictions" / "mlp" / "seed_0.npz")
    f1 = rows[(rows["model"] == "mlp")].set_index("class")["f1"]
    assert list(f1) == pytest.approx(list(f1_score(saved["target"], saved["final"], average=None)))
    by_acc = launch("leaderboard", run, "--metric", "acc")
    assert by_acc.returncode == 0 and "always predicting '0' scores accuracy" in by_acc.stdout and "majority do(es) not beat it" in by_acc.stdout


def test_multilabel_with_tuple_and_dict_outputs(tmp_path):
    models = [model(n, a, "features = 12, outputs = 5", 0.01) for n, a in (("tuple", "TwoHeads"), ("dict", "DictOut"))]
    cfg = toml(tmp_path, "multilabel", "MultiLabel", "tasks_models.py:with_aux", models)
    dry = run_ok("run", cfg, "--dry-run")
    assert "multi-label classification (5 labels)" in dry.stdout and "micro_f1" in dry.stdout
    result = run_ok("run", cfg)
    run = tmp_path / "runs" / "multilabel"
    board = pd.read_csv(run / "leaderboard.csv")
    assert "ranked by test_micro_f1" in result.stdout
    assert board["test_micro_f1_mean"].between(0.1, 1).all() and np.isfinite(board.iloc[1]["p_vs_best"])
    history = pd.read_csv(run / "history.csv")
    assert history[["test_map", "test_hamming", "val_subset_acc"]].notna().all().all()


def test_hundred_classes_top5_with_an_auxiliary_loss(tmp_path):
    models = [model("two_heads", "TwoHeads", "features = 16, outputs = 100, hidden = 64", 0.01), model("dict", "DictOut", "features = 16, outputs = 100, hidden = 64", 0.01)]
    cfg = toml(tmp_path, "blobs", "Blobs", "tasks_models.py:with_aux", models, report='rank_by = "top5_acc"\nmetrics = ["top5_acc", "macro_f1", "ece"]', epochs=2)
    dry = run_ok("run", cfg, "--dry-run")
    assert "100-class classification" in dry.stdout
    run_ok("run", cfg)
    run = tmp_path / "runs" / "blobs"
    board = pd.read_csv(run / "leaderboard.csv")
    assert board["test_top5_acc_mean"].between(0.05, 1).all() and (board["test_top5_acc_mean"] >= board["test_acc_mean"]).all()
    saved = np.load(run / "predictions" / "dict" / "seed_0.npz")
    assert saved["final.top"].shape == (1000, 5) and saved["final.top"].dtype == np.int16
    after = launch("leaderboard", run, "--metric", "brier")  # kept statistics: any metric after the run
    assert after.returncode == 0, after.stderr
    assert "ranked by test_brier" in after.stdout


def own_metric_example() -> str:
    """docs/metrics.md's worked example of a metric of one's own, as the reader copies it."""
    import re

    from tests.helpers import ROOT

    text = (ROOT / "docs" / "metrics.md").read_text()
    return re.search(r"^```python file=my_metrics.py\n(.*?)^```", text, re.S | re.M).group(1)


def test_a_metric_of_ones_own_ranks_and_selects(tmp_path):
    from sklearn.metrics import jaccard_score

    (tmp_path / "my_metrics.py").write_text(own_metric_example())
    models = [model("mlp", "MLP", "features = 12, outputs = 5, squeeze = false", 0.01), model("linear", "Linear", "features = 12, outputs = 5, squeeze = false", 0.01)]
    cfg = toml(tmp_path, "own", "MultiLabel", "BCEWithLogitsLoss", models, report='metrics = ["micro_f1", "my_metrics.py:iou"]\nrank_by = "iou"\nselect = "best_val"')
    result = run_ok("run", cfg)
    run = tmp_path / "runs" / "own"
    assert "ranked by test_iou" in result.stdout and "paired bootstrap" in result.stdout
    board = pd.read_csv(run / "leaderboard.csv")
    history = pd.read_csv(run / "history.csv")
    for name in board["model"]:  # best_val reads val_iou, in the metric's own direction (higher)
        rows = history[history["model"] == name]
        assert board.set_index("model").at[name, "selected_epoch"] == rows.loc[rows["val_iou"].idxmax(), "epoch"]
    saved = np.load(run / "predictions" / "mlp" / "seed_0.npz")
    want = jaccard_score(saved["target"] > 0.5, saved["best_val.score"] >= 0.5, average="micro")
    assert board.set_index("model").at["mlp", "test_iou_mean"] == pytest.approx(want)
    bad = launch("run", toml(tmp_path, "bad", "MultiLabel", "BCEWithLogitsLoss", models, report='metrics = ["my_metrics.py:nope"]'), "--dry-run")
    assert bad.returncode == 2 and "report.metrics[0]" in bad.stderr and "no attribute 'nope'" in bad.stderr


def test_a_column_output_against_scalar_targets_is_refused_not_broadcast(tmp_path):
    """Issue 24 item 3: MSELoss on [B, 1] against [B] broadcasts to [B, B] with only a warning."""
    cfg = toml(tmp_path, "column", "Diabetes", "MSELoss", [model("linear", "Linear", "features = 10, squeeze = false")])
    for args in (("--dry-run",), ()):
        proc = launch("run", cfg, *args)
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip()
        assert "(1,)" in line and "shape ()" in line and "[B, B]" in line and len(line.splitlines()) == 1
    assert not (tmp_path / "runs" / "column").exists()  # refused before anything was written


def test_per_output_and_per_class_tables(regression, tmp_path):
    from sklearn.metrics import r2_score, root_mean_squared_error

    run, _, _ = regression
    table = launch("leaderboard", run, "--per-class", "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = pd.read_csv(__import__("io").StringIO(table.stdout)).set_index("model")
    saved = np.load(run / "predictions" / "mlp" / "seed_0.npz")
    assert rows.at["mlp", "rmse"] == pytest.approx(root_mean_squared_error(saved["target"], saved["final.pred"][:, 0]))
    assert rows.at["mlp", "r2"] == pytest.approx(r2_score(saved["target"], saved["final.pred"][:, 0]))

"""Several heads (docs/metrics.md, "Several heads"): digits with two targets, the digit
(classification) and its ink (the mean pixel: regression), a model returning both under the same
keys. One trained run, shared by the module, is read as a user would: the dry run's task line,
history.csv, the predictions file, TensorBoard, the leaderboard per head metric (values checked
against scikit-learn, interval and paired p against scipy), early stopping and best_val on
val_digit/acc; then a kill -9 and resume, and shards merged, equal to it bitwise; and every
refusal is exit 2 with one line."""
from __future__ import annotations

import math
import os
import signal

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, mean_squared_error

from compare.config import tomlio
from compare.errors import CompareWarning
from tests.helpers import cli, compare

TASK = '''
import os
import signal

import torch
from torch import nn
from sklearn.datasets import load_digits
from compare.datasets import DatasetAdapter

STEPS = [0]  # training forwards so far (HEADS_KILL_AT: SIGKILL at that one)


class Digits(torch.utils.data.Dataset):
    def __init__(self, x, y, ink, index, as_tuple):
        self.x, self.y, self.ink, self.index, self.as_tuple = x, y, ink, index, as_tuple

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        j = self.index[i]
        heads = (self.y[j], self.ink[j]) if self.as_tuple else {"digit": self.y[j], "ink": self.ink[j]}
        return self.x[j], heads


class TwoHeads(DatasetAdapter):
    def __init__(self, as_tuple=False, **kw):
        super().__init__(**kw)
        self.as_tuple = as_tuple

    def load_data(self):
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16
        y, ink = torch.tensor(d.target), x.mean(1) * 4
        return Digits(x, y, ink, range(0, 700), self.as_tuple), Digits(x, y, ink, range(1400, 1700), self.as_tuple)


class Net(nn.Module):
    def __init__(self, hidden=32, keys=("digit", "ink")):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.digit, self.ink, self.keys = nn.Linear(hidden, 10), nn.Linear(hidden, 1), keys

    def forward(self, x):
        if self.training:
            STEPS[0] += 1
            if STEPS[0] == int(os.environ.get("HEADS_KILL_AT", 0)):
                os.kill(os.getpid(), signal.SIGKILL)
        h = self.body(x)
        out = (self.digit(h), self.ink(h).squeeze(-1))
        return dict(zip(self.keys, out)) if self.keys else out  # keys = []: a tuple


def loss(out, y):  # one loss of the user's own, on the output and targets as they are
    return nn.functional.cross_entropy(out[0], y[0]) + nn.functional.mse_loss(out[1], y[1])
'''
TIMING = {"time_s", "eval_time_s", "samples_per_s", "data_time_s", "train_time_s"}


def config(tmp, name="exp.toml", **changes):
    raw = {
        "experiment": {"name": "heads", "seed": 0, "epochs": 3, "device": "cpu", "checkpoint_every_steps": 5, "output_dir": str(tmp / "runs"),
                       "early_stopping": {"metric": "val_digit/acc", "patience": 1, "min_delta": 0.5}},
        "data": {"dataset": "task.py:TwoHeads", "batch_size": 50, "eval_batch_size": 100, "val_fraction": 0.2},
        "loss": {"digit": {"name": "CrossEntropyLoss"}, "ink": {"name": "MSELoss", "weight": 0.5}},
        "model": [{"name": "sgd", "arch": "task.py:Net", "optimizer": {"name": "SGD", "lr": 0.1}},
                  {"name": "adam", "arch": "task.py:Net", "args": {"hidden": 48}, "optimizer": {"name": "Adam", "lr": 0.01}}],
    }
    for table, values in changes.items():  # tables merged, except the loss and the models: replaced
        raw[table] = raw[table] | values if table in ("experiment", "data") else values
        raw[table] = {k: v for k, v in raw[table].items() if v is not None} if isinstance(raw[table], dict) else raw[table]
    (tmp / "task.py").write_text(TASK)
    (tmp / name).write_text(tomlio.dumps(raw))
    return tmp / name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads")
    cfg = config(tmp)
    done = compare("run", cfg, "-q", "--no-plots", cwd=tmp)
    assert done.returncode == 0, done.stderr
    return tmp, cfg, tmp / "runs" / "heads"


def history(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")


def test_dry_run_shows_each_heads_task_and_metrics(run):
    tmp, cfg, _ = run
    shown = cli("run", cfg, "--dry-run")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "task: 2 heads: digit: 10-class classification; ink: regression (1 output)" in text
    assert "metrics: digit/acc, digit/top5_acc, digit/macro_f1, digit/nll, digit/ece, ink/rmse, ink/mae, ink/r2, digit/loss, ink/loss (ranked by digit/acc" in text
    assert "digit 50x10, ink 50" in text  # each head's output for one batch


SEG = '''
import torch
from torch import nn
from compare.datasets import DatasetAdapter


class Masks(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        return x, {"mask": (x[0] > 0.5).long(), "label": (x.mean() > 0.5).long()}


class Seg(DatasetAdapter):
    def load_data(self):
        return Masks(64, 0), Masks(32, 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 2, 1), nn.Linear(3, 2)

    def forward(self, x):
        return {"mask": self.conv(x), "label": self.fc(x.mean((2, 3)))}
'''


def test_a_dense_head_beside_a_class_head(tmp_path):
    """A segmentation head and an image label: each head's task as one target's, dense included."""
    (tmp_path / "seg.py").write_text(SEG)
    raw = {"experiment": {"name": "seg", "epochs": 1, "device": "cpu"}, "data": {"dataset": "seg.py:Seg", "batch_size": 16},
           "loss": {"mask": {"name": "CrossEntropyLoss", "args": {"ignore_index": 255}}, "label": {"name": "CrossEntropyLoss"}},
           "model": [{"name": "a", "arch": "seg.py:Net"}]}
    (tmp_path / "seg.toml").write_text(tomlio.dumps(raw))
    shown = cli("run", tmp_path / "seg.toml", "--dry-run")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "task: 2 heads: mask: dense classification (segmentation, 2 classes, 8x8, ignore_index 255); label: binary classification" in text
    assert "metrics: mask/miou, mask/pixel_acc" in text and "label/auroc" in text


def test_history_and_predictions_hold_every_heads_metric_and_loss(run):
    """The per-head columns equal scikit-learn on the saved predictions; the shared loss is the
    weighted sum of the heads' losses; the meters' acc (one tensor of classes) is NaN."""
    _, _, run_dir = run
    h = history(run_dir)
    for split in ("val", "test"):
        for m in ("digit/acc", "digit/nll", "ink/rmse", "ink/r2", "digit/loss", "ink/loss"):
            assert f"{split}_{m}" in h
    assert {"train_digit/loss", "train_ink/loss"} <= set(h.columns)
    assert h["test_acc"].isna().all() and h["val_acc"].isna().all()
    for model in ("sgd", "adam"):
        last = h[h.model == model].iloc[-1]
        with np.load(run_dir / "predictions" / model / "seed_0.npz") as p:
            assert int(p["final_epoch"]) == last.epoch
            digit, ink = p["final.digit/target"], p["final.ink/target"]
            assert last["test_digit/acc"] == pytest.approx(accuracy_score(digit, p["final.digit/top1"]), abs=1e-9)
            assert last["test_ink/rmse"] == pytest.approx(math.sqrt(mean_squared_error(ink, p["final.ink/pred"][:, 0])), rel=1e-6)
            assert last["test_digit/loss"] == pytest.approx(p["final.digit/loss"].mean(), rel=1e-6)
            assert last["test_digit/nll"] == pytest.approx(last["test_digit/loss"], rel=1e-4)  # CE is the nll
            assert last["test_ink/loss"] == pytest.approx(mean_squared_error(ink, p["final.ink/pred"][:, 0]), rel=1e-5)
            assert len(p["target"]) == len(digit) == 300
        assert last["test_loss"] == pytest.approx(last["test_digit/loss"] + 0.5 * last["test_ink/loss"], rel=1e-5)
        assert last["train_loss"] == pytest.approx(last["train_digit/loss"] + 0.5 * last["train_ink/loss"], rel=1e-5)


def board(run_dir, metric: str, *extra) -> pd.DataFrame:
    out = run_dir.parent / f"board_{metric.replace('/', '_')}.csv"
    shown = cli("leaderboard", run_dir, "--metric", metric, "-f", "csv", "--out", out, *extra)
    assert shown.exit_code == 0, shown.output
    return pd.read_csv(out)


def test_leaderboard_per_head_metric_has_interval_and_paired_p(run):
    _, _, run_dir = run
    acc = board(run_dir, "digit/acc")
    with np.load(run_dir / "predictions" / "sgd" / "seed_0.npz") as a, np.load(run_dir / "predictions" / "adam" / "seed_0.npz") as b:
        right = {"sgd": a["final.digit/top1"] == a["final.digit/target"], "adam": b["final.digit/top1"] == b["final.digit/target"]}
    best, other = acc.model.iloc[0], acc.model.iloc[1]
    assert acc["test_digit/acc_mean"].iloc[0] >= acc["test_digit/acc_mean"].iloc[1]
    for _, row in acc.iterrows():  # Wilson's score interval over the 300 test samples
        ci = stats.binomtest(int(right[row.model].sum()), len(right[row.model])).proportion_ci(0.95, method="wilson")
        assert (row["test_digit/acc_ci95_low"], row["test_digit/acc_ci95_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    wins, losses = int((right[best] & ~right[other]).sum()), int((~right[best] & right[other]).sum())
    p = stats.binomtest(wins, wins + losses, 0.5).pvalue  # exact McNemar: a sign test on the discordant samples
    assert acc.set_index("model").at[other, "p_vs_best"] == pytest.approx(p, rel=1e-9)

    rmse = board(run_dir, "ink/rmse")
    assert rmse["test_ink/rmse_mean"].is_monotonic_increasing  # lower is better: the best first
    row = rmse.iloc[1]
    assert row["test_ink/rmse_ci95_low"] < row["test_ink/rmse_mean"] < row["test_ink/rmse_ci95_high"]
    assert 0 <= row["p_vs_best"] <= 1 and not math.isnan(row["mde_vs_best"])
    loss = board(run_dir, "ink/loss")  # a head's own loss: a metric with its test too
    assert loss["test_ink/loss_mean"].is_monotonic_increasing and 0 <= loss["p_vs_best"].iloc[1] <= 1


def test_early_stopping_and_best_val_read_the_heads_val_metric(run):
    """min_delta 0.5 on val_digit/acc, patience 1: no model improves enough after epoch 1; the
    best epoch on val is the one with the highest val_digit/acc."""
    _, _, run_dir = run
    h = history(run_dir)
    for model in ("sgd", "adam"):
        rows = h[h.model == model]
        assert list(rows.epoch) == [1, 2] and rows.status.iloc[-1] == "early_stopped"
    best = board(run_dir, "digit/acc", "--select", "best_val").set_index("model")
    for model in ("sgd", "adam"):
        rows = h[h.model == model]
        assert best.at[model, "selected_epoch"] == rows.epoch.iloc[int(rows["val_digit/acc"].to_numpy().argmax())]


def test_tensorboard_has_every_heads_metric_and_loss(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    _, _, run_dir = run
    events = EventAccumulator(str(run_dir / "tb" / "adam"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"digit/acc/val", "digit/acc/test", "ink/rmse/test", "digit/loss/test", "ink/loss/val", "digit/loss/train", "loss/test"} <= tags
    rows = history(run_dir).query("model == 'adam'")
    assert [e.value for e in events.Scalars("ink/loss/test")] == pytest.approx(list(rows["test_ink/loss"]), rel=1e-6)
    assert [e.value for e in events.Scalars("ink/loss/train")] == pytest.approx(list(rows["train_ink/loss"]), rel=1e-6)


def test_each_head_gets_its_own_plots(run):
    """`compare plot`: the confusion matrices, calibration and per-class F1 of the digit head,
    the predicted-against-true plot of the ink head, and no note that they fit another task."""
    _, _, run_dir = run
    shown = cli("plot", run_dir)
    assert shown.exit_code == 0, shown.output
    drawn = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert {"confusion_matrices.digit.png", "calibration.digit.png", "per_class.digit.png", "regression.ink.png", "learning_curves.png"} <= drawn
    assert "confusion_matrices.png" not in drawn and "another task" not in shown.output


def same_run(got, want) -> None:
    a, b = history(got), history(want)
    kept = [c for c in b.columns if c not in TIMING]
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[kept], b[kept], check_exact=True)
    for model in ("sgd", "adam"):
        with np.load(got / "predictions" / model / "seed_0.npz") as x, np.load(want / "predictions" / model / "seed_0.npz") as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in y.files)


def test_kill_9_and_resume_equal_the_uninterrupted_run_bitwise(run):
    tmp, cfg, reference = run
    out = tmp / "killed"
    killed = compare("run", cfg, "--out", out, "-q", "--no-plots", cwd=tmp, env=os.environ | {"HEADS_KILL_AT": "23"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = compare("resume", out, "-q", "--no-plots", cwd=tmp)
    assert resumed.returncode == 0, resumed.stderr
    same_run(out, reference)


def test_shards_merged_equal_the_run_and_rank_any_head(run):
    tmp, cfg, reference = run
    for shard in ("1/2", "2/2"):
        done = cli("run", cfg, "--shard", shard, "-q", "--no-plots")
        assert done.exit_code == 0, done.output
    shards = [tmp / "runs" / "heads.shard-1-of-2", tmp / "runs" / "heads.shard-2-of-2"]
    merged = cli("merge", *shards, "--out", tmp / "merged", "--no-plots")
    assert merged.exit_code == 0, merged.output
    same_run(tmp / "merged", reference)
    got, want = board(tmp / "merged", "ink/rmse"), board(reference, "ink/rmse")
    kept = [c for c in want.columns if c not in TIMING]
    pd.testing.assert_frame_equal(got[kept], want[kept], check_exact=True)


def test_tuple_targets_one_loss_of_the_users_own_and_no_fusing(tmp_path):
    """A tuple of targets and of outputs: heads "0" and "1"; the user's single loss takes both.
    `fuse = "on"` leaves such models unfused (a fused group's evaluation reads one prediction)."""
    model = {"arch": "task.py:Net", "args": {"keys": []}, "optimizer": {"name": "SGD", "lr": 0.1}}
    cfg = config(tmp_path, experiment={"epochs": 1, "early_stopping": None, "fuse": "on"}, data={"args": {"as_tuple": True}},
                 loss={"name": "task.py:loss"}, model=[{"name": "m"} | model, {"name": "n", "seed": 3} | model])
    with pytest.warns(CompareWarning, match="not fused: several heads"):
        done = cli("run", cfg, "-q", "--no-plots")
    assert done.exit_code == 0, done.output
    run_dir = tmp_path / "runs" / "heads"
    h = history(run_dir)
    assert {"test_0/acc", "test_1/rmse", "val_1/r2"} <= set(h.columns) and not any(c.endswith("/loss") for c in h.columns)
    assert h["test_0/acc"].between(0, 1).all() and h["test_1/rmse"].notna().all()
    assert pd.read_csv(run_dir / "models.csv")["fused"].isna().all()


def test_racing_on_a_heads_val_metric_eliminates_the_worse_head(tmp_path):
    """Racing on val_ink/rmse (lower is better): the model eliminated at the look is the one
    with the higher val_ink/rmse there."""
    cfg = config(tmp_path, experiment={"epochs": 2, "early_stopping": None, "race": {"metric": "val_ink/rmse", "min_epochs": 1}})
    done = cli("run", cfg, "-q", "--no-plots")
    assert done.exit_code == 0, done.output
    first = history(tmp_path / "runs" / "heads").query("epoch == 1").set_index("model")
    out = first.index[first.status == "eliminated"]
    assert list(out) == ["adam"] and first.at["adam", "eliminated_by"].startswith("sgd (Holm p")
    assert first.at["adam", "val_ink/rmse"] > first.at["sgd", "val_ink/rmse"]


REFUSALS = {
    "a metric on no head": ({"report": {"metrics": ["colour/acc"]}}, "report.metrics", "no head 'colour'; the heads: digit, ink"),
    "a metric the head lacks": ({"report": {"rank_by": "ink/acc"}}, "report.rank_by", "head 'ink' has no metric 'acc'"),
    "early stopping on no head": ({"experiment": {"early_stopping": {"metric": "val_colour/acc"}}}, "experiment.early_stopping.metric", "the heads: digit, ink"),
    "racing on val_acc (NaN with heads)": ({"experiment": {"race": {"min_epochs": 1}}}, "experiment.race.metric", "metric 'acc': a metric of several heads is named <head>/<metric>"),
    "a loss for one head of two": ({"loss": {"digit": {"name": "CrossEntropyLoss"}}}, "loss", "the targets' heads are digit, ink"),
    "a negative weight": ({"loss": {"digit": {"name": "CrossEntropyLoss"}, "ink": {"name": "MSELoss", "weight": -1}}}, "loss.ink.weight", "expected a number >= 0"),
    "an unknown key in a head's loss": ({"loss": {"digit": {"name": "CrossEntropyLoss", "wieght": 2}, "ink": {"name": "MSELoss"}}}, "loss.digit.wieght", "unknown key"),
    "outputs under other keys": ({"model": [{"name": "m", "arch": "task.py:Net", "args": {"keys": ["logits", "ink"]}}]}, "", "the model's output has logits, ink (no digit)"),
}


@pytest.mark.parametrize("change", REFUSALS.values(), ids=list(REFUSALS))
def test_refusals_are_exit_2_with_one_line(tmp_path, change):
    changes, key, words = change
    shown = cli("run", config(tmp_path, **changes), "--dry-run")
    lines = shown.stderr.strip().splitlines()
    assert shown.exit_code == 2 and len(lines) == 1, shown.output
    assert key in lines[0] and words in lines[0], lines[0]

"""The honest protocol (README "How the verdict is made"): a val split for every training-time
decision, the test split read only for the reported numbers, and the reported epoch chosen on
val or fixed in advance. Perturbing the test labels must change no decision and no weight."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from compare.datasets.digits import Digits
from compare.assemble.validate import config_from_dict
from compare.data.loaders import load_data
from compare.data.splits import known_targets, stratified_holdout
from compare.run.experiment import Experiment
from compare.run.shared_pass import SharedPass
from tests.helpers import compare, digits_config, mlp

CPU = torch.device("cpu")
DECISIONS = ["train_loss", "train_acc", "val_loss", "val_acc", "grad_norm_mean", "grad_norm_max", "grad_norm_last", "lr", "status", "stopped_at"]


class ShuffledTestLabels(Digits):
    """Digits with the test labels permuted: what a model learns must not depend on them."""

    def load_data(self):
        train, test = super().load_data()
        x, y = test.tensors
        return train, TensorDataset(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))])


class OwnVal(Digits):
    """An adapter whose load_data gives all three splits."""

    def load_data(self):
        train, test = super().load_data()
        x, y = train.tensors
        return TensorDataset(x[200:], y[200:]), TensorDataset(x[:200], y[:200]), test


def decisive_config(dataset, **data) -> dict:
    """Every decision that reads val: early stopping, a plateau scheduler, the best-val report."""
    plateau = {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5, "threshold": 0.3}  # fires when val loss falls < 30%
    b = mlp("b", lr=0.3, scheduler=plateau, early_stopping={"metric": "val_loss", "patience": 9})
    raw = digits_config([mlp("a", lr=0.5), b], epochs=6, val_fraction=0.25, **data)
    raw["data"]["dataset"] = dataset
    raw["experiment"]["early_stopping"] = {"metric": "val_acc", "patience": 1}
    raw["report"] = {"select": "best_val"}
    return raw


def trained(tmp_path, raw: dict, name: str, monkeypatch) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(history, leaderboard, the final weights of every model) of one run."""
    weights = {}
    finish = SharedPass._finish

    def keep_weights(self, out, tb):
        weights.update({s.name: {k: v.clone() for k, v in s.model.state_dict().items()} for s in self.slots})
        finish(self, out, tb)

    monkeypatch.setattr(SharedPass, "_finish", keep_weights)
    Experiment(config_from_dict(raw)).run(tmp_path / name, plots=False)
    return pd.read_csv(tmp_path / name / "history.csv"), pd.read_csv(tmp_path / name / "leaderboard.csv"), weights


def test_val_split_is_stratified_seeded_disjoint_and_shared_by_every_model_and_seed(tmp_path, run):
    raw = digits_config([mlp("a"), mlp("b", lr=0.05)], epochs=1, val_fraction=0.2, subset=1000)
    raw["experiment"]["seeds"] = [3, 4]
    run(raw)
    held = pd.read_csv(tmp_path / "run" / "val_indices.csv")["train_index"].tolist()
    data = load_data(config_from_dict(raw), CPU)
    train_idx = set(data.train.dataset.indices[i] for i in data.train.indices)  # Subset(kept) of Subset(subset)
    assert len(held) == len(set(held)) == len(data.val) and not train_idx & set(held)
    assert len(train_idx) + len(held) == 1000
    # Stratified: every class gives round(0.2 * its share of the 1,000) samples.
    subset_labels = known_targets(data.train.dataset)
    counts = torch.bincount(known_targets(data.val), minlength=10)
    expected = torch.round(0.2 * torch.bincount(subset_labels, minlength=10).double()).long()
    assert torch.equal(counts, expected)
    # Seeded by the experiment's base seed alone: the same for every model and every seed ...
    env = pd.read_json(tmp_path / "run" / "env.json", typ="series")
    assert env["val_samples"] == len(held) and "stratified" in env["splits"]["val"]
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["val_acc"].notna().all() and len(history) == 4
    # ... and a different base seed holds out different samples.
    assert stratified_holdout(subset_labels, 0.2, 0)[1] != stratified_holdout(subset_labels, 0.2, 1)[1]


def test_perturbed_test_labels_change_no_decision_and_no_weight(tmp_path, monkeypatch):
    history, board, weights = trained(tmp_path, decisive_config("digits"), "honest", monkeypatch)
    history2, board2, weights2 = trained(tmp_path, decisive_config(ShuffledTestLabels), "shuffled", monkeypatch)
    pd.testing.assert_frame_equal(history[["model", "seed", "epoch", *DECISIONS]], history2[["model", "seed", "epoch", *DECISIONS]])
    assert not np.allclose(history["test_acc"], history2["test_acc"])  # the labels did change
    assert "early_stopped" in set(history["status"]) and history.groupby("model")["lr"].nunique().max() > 1, "a decision was not exercised"
    assert list(board.sort_values("model")["selected_epoch"]) == list(board2.sort_values("model")["selected_epoch"])
    for name in weights:
        for key, tensor in weights[name].items():
            assert torch.equal(tensor, weights2[name][key]), f"{name}.{key} differs"


def test_the_best_val_epoch_is_reported_and_its_predictions_feed_the_paired_test(tmp_path, run):
    raw = digits_config([mlp("a", lr=0.3), mlp("b", lr=0.02)], epochs=4, val_fraction=0.2)
    raw["report"] = {"select": "best_val"}
    run(raw)
    folder = tmp_path / "run"
    history, board = pd.read_csv(folder / "history.csv"), pd.read_csv(folder / "leaderboard.csv").set_index("model")
    correct = {}
    for model in ("a", "b"):
        h = history[history.model == model].reset_index(drop=True)
        epoch = int(h.loc[h["val_acc"].idxmax(), "epoch"])  # the first best epoch on val
        with np.load(folder / "predictions" / model / "seed_0.npz") as npz:
            assert int(npz["best_val_epoch"]) == epoch == int(board.loc[model, "selected_epoch"])
            correct[model] = npz["best_val"] == npz["target"]
        assert board.loc[model, "selected_on"] == "val"
        assert board.loc[model, "test_acc_mean"] == h.loc[h.epoch == epoch, "test_acc"].item() == pytest.approx(correct[model].mean())
    best, other = board.index[0], board.index[1]
    wins, losses = int((correct[other] & ~correct[best]).sum()), int((~correct[other] & correct[best]).sum())
    assert (board.loc[other, "wins_vs_best"], board.loc[other, "losses_vs_best"]) == (wins, losses)
    assert np.isfinite(board.loc[other, "mde_vs_best"]) and np.isnan(board.loc[other, "seeds_needed"])  # one seed
    text = (folder / "leaderboard.md").read_text()
    assert "selected on val" in text and "best_test_acc" not in text and "best_test_acc" not in board.columns


@pytest.mark.parametrize("setting, key", [
    ('experiment.early_stopping={metric="test_loss",patience=2}', "experiment.early_stopping.metric"),
    ('experiment.early_stopping={metric="val_loss",patience=2}', "experiment.early_stopping"),
    ('model.mlp.scheduler={name="ReduceLROnPlateau"}', "model.mlp.scheduler"),
    ("report.select=best_val", "report.select"),
])
def test_a_decision_that_would_read_test_is_refused_with_the_key_and_the_fix(tmp_path, setting, key):
    proc = compare("run", "experiments/digits.toml", "--set", "data.val_fraction=0", "--set", setting, "--out", tmp_path / "r", "--no-plots")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"{key}:" in line and "set data.val_fraction = 0.1" in line
    assert not (tmp_path / "r").exists()


def test_the_issue_command_gives_val_columns_and_the_verdict_columns(tmp_path):
    proc = compare("run", "experiments/digits.toml", "--set", "data.val_fraction=0.2", "--set", 'experiment.early_stopping={metric="val_loss",patience=2}',
                   "--set", "experiment.epochs=2", "--set", "data.subset=400", "--out", tmp_path / "r", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    history, board = pd.read_csv(tmp_path / "r" / "history.csv"), pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    assert {"val_loss", "val_acc"} <= set(history.columns) and history["val_loss"].notna().all()
    assert {"selected_epoch", "selected_on", "mde_vs_best", "seeds_needed"} <= set(board.columns)
    held = len(pd.read_csv(tmp_path / "r" / "val_indices.csv"))  # 20% of each class of the 400, rounded
    assert 70 <= held <= 90
    assert f"**Protocol:** selected: the final epoch (val: {held} samples held out of train" in (tmp_path / "r" / "leaderboard.md").read_text()
    assert "selected: the final epoch" in proc.stdout


def test_datasets_may_bring_their_own_val_split(tmp_path, run, tiny_image_folder):
    result = run(digits_config([mlp("a")], epochs=1) | {"data": {"dataset": OwnVal, "batch_size": 64}}, name="own")
    assert result.history["val_acc"].notna().all()
    env = pd.read_json(tmp_path / "own" / "env.json", typ="series")
    assert env["val_samples"] == 200 and env["splits"]["val"] == "the dataset's val split"
    assert not (tmp_path / "own" / "val_indices.csv").exists()
    # An image folder with train/ val/ test/ uses all three; with train/ and val/ only, val/ is the test split.
    (tiny_image_folder / "test").rename(tiny_image_folder / "val")
    folder = {"dataset": "imagefolder", "root": str(tiny_image_folder), "args": {"image_size": 16}, "batch_size": 8}
    two = load_data(config_from_dict(digits_config([mlp("a")]) | {"data": folder}), CPU)
    assert two.val is None and "the val/ folder is the test split" in two.sources["test"]
    for cls in ("cat", "dog"):
        (tiny_image_folder / "test" / cls).mkdir(parents=True)
        shutil.copy(next((tiny_image_folder / "val" / cls).iterdir()), tiny_image_folder / "test" / cls / "x.png")
    three = load_data(config_from_dict(digits_config([mlp("a")]) | {"data": folder}), CPU)
    assert (len(three.train), len(three.val), len(three.test)) == (24, 8, 2)


def test_tensorboard_gets_val_curves(tmp_path, run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(digits_config([mlp("a")], epochs=2, val_fraction=0.2))
    events = EventAccumulator(str(tmp_path / "run" / "tb" / "a")).Reload()
    assert {"loss/val", "accuracy/val", "loss/test"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2]

"""The leaderboard from a finished run: numbers equal the statistics computed directly from
history.csv and the saved predictions; Markdown says what backs the claims; odd runs
(early stops, NaN metrics, missing predictions, several run directories) still tabulate."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from compare.metrics import significance
from compare.errors import ReportError, RunDirError
from compare.report.leaderboard import build
from compare.report.run_data import load_run
from tests.helpers import digits_config, mlp

REQUIRED = [
    "rank", "model", "arch", "params", "flops_per_sample", "test_acc_mean", "test_acc_std", "test_acc_ci95_low",
    "test_acc_ci95_high", "test_loss_mean", "selected_epoch", "selected_on", "train_time_s", "samples_per_s", "status", "p_vs_best",
    "tied_with_best", "grad_norm_mean", "grad_norm_max", "grad_norm_final", "grad_nonfinite",
]


def correct(run_dir, model: str, seed: int) -> np.ndarray:
    with np.load(run_dir / "predictions" / model / f"seed_{seed}.npz", allow_pickle=False) as npz:
        return npz["final"] == npz["target"]


def test_leaderboard_csv_numbers_come_from_history_over_seeds(seeded_run):
    board = pd.read_csv(seeded_run / "leaderboard.csv")
    assert REQUIRED == [c for c in board.columns if c in REQUIRED]
    assert list(board["rank"]) == [1, 2, 3] and board["test_acc_mean"].is_monotonic_decreasing
    assert (board["params"] > 0).all() and (board["flops_per_sample"] > 0).all()
    history = pd.read_csv(seeded_run / "history.csv")
    final = history[history.epoch == 2]
    for row in board.itertuples():
        acc = final[final.model == row.model].sort_values("seed")["test_acc"].to_numpy()
        assert len(acc) == 3
        assert row.test_acc_mean == pytest.approx(acc.mean())
        assert row.test_acc_std == pytest.approx(acc.std(ddof=1))
        low, high = sp.t.interval(0.95, df=2, loc=acc.mean(), scale=sp.sem(acc))
        assert row.test_acc_ci95_low == pytest.approx(max(0.0, low))
        assert row.test_acc_ci95_high == pytest.approx(min(1.0, high))
        h = history[history.model == row.model]
        assert row.grad_norm_max == pytest.approx(h["grad_norm_max"].max())
        assert row.grad_norm_mean == pytest.approx(h["grad_norm_mean"].mean())
        assert row.grad_nonfinite == h["grad_nonfinite"].sum()
        assert row.status == "done" and row.seeds == 3 and row.test_samples == 450
    assert board.loc[board.model == "stuck", "rank"].item() == 3


def test_paired_test_against_the_best_is_computed_on_the_saved_predictions(seeded_run):
    board = pd.read_csv(seeded_run / "leaderboard.csv").set_index("model")
    best = board.index[0]
    assert np.isnan(board.loc[best, "p_vs_best"]) and bool(board.loc[best, "tied_with_best"])
    raw = {}
    for model in board.index[1:]:
        d = sum(correct(seeded_run, model, s).astype(int) - correct(seeded_run, best, s).astype(int) for s in (0, 1, 2))
        wins, losses = int((d > 0).sum()), int((d < 0).sum())
        assert (board.loc[model, "wins_vs_best"], board.loc[model, "losses_vs_best"]) == (wins, losses)
        raw[model] = sp.binomtest(wins, wins + losses, 0.5).pvalue
        assert board.loc[model, "p_vs_best_raw"] == pytest.approx(raw[model])
    adjusted = dict(zip(raw, significance.holm(list(raw.values()))))
    for model, p in adjusted.items():
        assert board.loc[model, "p_vs_best"] == pytest.approx(p)
        assert bool(board.loc[model, "tied_with_best"]) == (p >= 0.05)
    assert not board.loc["stuck", "tied_with_best"] and board.loc["stuck", "p_vs_best"] < 1e-6


def test_markdown_says_what_backs_each_claim(seeded_run):
    text = (seeded_run / "leaderboard.md").read_text()
    board = pd.read_csv(seeded_run / "leaderboard.csv")
    assert "**Seeds:** 3 (0, 1, 2)" in text and "**Test samples:** 450" in text
    assert "Student-t" in text and "sign test" in text and "McNemar" in text and "Holm-corrected over 2 comparison(s)" in text
    assert f"against **{board.model[0]}**" in text
    assert "## Per seed: exact McNemar" in text and text.count("| stuck |") == 4  # main table + one row per seed


def test_one_seed_uses_a_wilson_interval(run):
    result = run(digits_config([mlp("a"), mlp("b", lr=0.0)], epochs=1), overrides=["experiment.seed=3"])
    board = result.leaderboard.set_index("model")
    acc = board.loc["a", "test_acc_mean"]
    ci = sp.binomtest(round(acc * 450), 450).proportion_ci(method="wilson")
    assert (board.loc["a", "test_acc_ci95_low"], board.loc["a", "test_acc_ci95_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert np.isnan(board.loc["a", "test_acc_std"])
    assert "Wilson" in (result.run_dir / "leaderboard.md").read_text()


def test_early_stops_nan_metrics_and_missing_predictions_still_tabulate(seeded_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(seeded_run, broken)
    history = pd.read_csv(broken / "history.csv")
    # slow stopped after epoch 1 in seed 2 (diverged: NaN loss); fast has no predictions for seed 1.
    history = history[~((history.model == "slow") & (history.seed == 2) & (history.epoch == 2))].copy()
    mask = (history.model == "slow") & (history.seed == 2)
    history.loc[mask, ["status", "test_loss"]] = ["diverged", np.nan]
    history.to_csv(broken / "history.csv", index=False)
    (broken / "predictions" / "fast" / "seed_1.npz").unlink()
    # a column another feature may add to models.csv (sweeps) is carried along
    models = pd.read_csv(broken / "models.csv").assign(**{"sweep.lr": [0.2, 0.05, 0.0]})
    models.to_csv(broken / "models.csv", index=False)

    board = build([load_run(broken)]).table.set_index("model")
    assert board.loc["slow", "status"] == "done x2, diverged x1"
    assert board.loc["slow", "epochs"] == 2 and board.loc["slow", "seeds"] == 3
    final = history[(history.model == "slow")].groupby("seed").tail(1)
    assert board.loc["slow", "test_acc_mean"] == pytest.approx(final["test_acc"].mean())
    assert board.loc["slow", "test_loss_mean"] == pytest.approx(final["test_loss"].mean())  # NaN skipped
    assert board["sweep.lr"].to_dict() == {"fast": 0.2, "slow": 0.05, "stuck": 0.0}
    best = board.index[0]
    for model in board.index[1:]:  # paired on the seeds both models have predictions for
        seeds = (0, 2) if "fast" in (model, best) else (0, 1, 2)
        d = sum(correct(broken, model, s).astype(int) - correct(broken, best, s).astype(int) for s in seeds)
        assert (board.loc[model, "wins_vs_best"], board.loc[model, "losses_vs_best"]) == ((d > 0).sum(), (d < 0).sum())


def test_a_model_with_nan_accuracy_ranks_last(seeded_run, tmp_path):
    broken = tmp_path / "nan"
    shutil.copytree(seeded_run, broken)
    history = pd.read_csv(broken / "history.csv")
    history.loc[history.model == "fast", "test_acc"] = np.nan
    history.to_csv(broken / "history.csv", index=False)
    table = build([load_run(broken)]).table
    assert table["model"].iloc[-1] == "fast" and np.isnan(table["test_acc_mean"].iloc[-1])


def test_several_run_dirs_merge_into_one_table(seeded_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(seeded_run, other)
    board = build([load_run(seeded_run), load_run(other)])
    table = board.table
    assert len(table) == 6 and set(table["run"]) == {seeded_run.name, "other"}
    assert table.groupby("model").size().to_dict() == {"fast": 2, "slow": 2, "stuck": 2}
    assert board.evidence.comparisons == 5  # same test samples: one family across runs
    # A run on another test set is not paired with this one.
    config = (other / "config.toml").read_text()
    (other / "config.toml").write_text(config.replace('dataset = "digits"', 'dataset = "digits"\ntest_subset = 100'))
    board = build([load_run(seeded_run), load_run(other)])
    assert board.table["p_vs_best"].isna().all() and "no paired test across runs" in board.evidence.notes[0]


def test_bad_requests_are_typed_errors(seeded_run, tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no history.csv"):
        load_run(tmp_path / "empty")
    with pytest.raises(ReportError, match="did you mean 'test_loss'"):
        build([load_run(seeded_run)], metric="test_los")
    with pytest.raises(ReportError, match="more than once"):
        build([load_run(seeded_run), load_run(seeded_run)])


def test_metric_option_ranks_by_another_column(seeded_run):
    board = build([load_run(seeded_run)], metric="test_loss")
    table = board.table
    assert table["test_loss_mean"].is_monotonic_increasing and not board.evidence.higher_is_better
    assert {"test_loss_std", "test_loss_ci95_low", "test_loss_ci95_high"} <= set(table.columns)

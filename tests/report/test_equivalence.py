"""Equivalence and non-inferiority as verdicts ([report] margin, --margin; docs/verdict.md).

- The statistic (runner/metrics/significance.py): the (1 - 2 alpha) interval of (model - best)
  within +-margin is the TOST; checked against scipy's two one-sided t-tests.
- Simulations with fixed seeds, called the way verdict.judge calls them: at a true difference
  equal to the margin, equivalence is declared in at most alpha + 3 binomial SE of repeats
  (size); at a true difference of 0 with enough samples, in most repeats (power). `pytest -s`
  prints the rates; docs/verdict.md records them.
- What a user sees: the columns in leaderboard.csv / .md and the terminal, for accuracy and for
  metrics of the other test families, the config key, the words, and bad margins refused (exit 2).
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from compare.metrics import significance
from compare.metrics.builtin import Kept, metrics_for
from compare.report.sentences import verdict as words
from tests.helpers import cli, digits_config, mlp, write

ALPHA = significance.ALPHA
MAE = metrics_for("regression", 1)["mae"]
COLUMNS = ["equivalent_to_best", "non_inferior", "diff_vs_best_ci90_low", "diff_vs_best_ci90_high"]


def _ceiling(repeats: int) -> float:
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / repeats)


# ---------------------------------------------------------------- the statistic


def test_tost_is_scipys_two_one_sided_t_tests():
    """Inside +-margin exactly when both one-sided t-tests reject at alpha (the TOST p < alpha);
    non-inferior exactly when the one on the bad side does."""
    rng = np.random.default_rng(0)
    for i in range(200):
        d = rng.normal(rng.uniform(-0.03, 0.03), rng.uniform(0.01, 0.2), size=int(rng.integers(3, 300)))
        margin = float(rng.uniform(0.005, 0.05))
        lower = sps.ttest_1samp(d, -margin, alternative="greater").pvalue  # H0: diff <= -margin
        upper = sps.ttest_1samp(d, margin, alternative="less").pvalue  # H0: diff >= +margin
        equivalent, non_inferior = significance.equivalence(significance.difference_interval(d), margin, higher_is_better=True)
        assert equivalent == (max(lower, upper) < ALPHA), i
        assert non_inferior == (lower < ALPHA), i
        _, non_inferior_low = significance.equivalence(significance.difference_interval(d), margin, higher_is_better=False)
        assert non_inferior_low == (upper < ALPHA), i  # lower is better: the bad side is above


def test_unknown_interval_gives_no_verdict():
    assert significance.equivalence(significance.difference_interval([0.1]), 0.01, True) == (None, None)
    assert significance.equivalence((0.0, 0.0), 0.01, True) == (True, True)  # identical predictions


# ---------------------------------------------------------------- simulations


def _paired_correct(rng, n, p_a, p_b, repeats):
    """Per-sample correctness of two models on the same n samples (independent errors)."""
    return rng.random((repeats, n)) < p_a, rng.random((repeats, n)) < p_b


def _rate(intervals, margin) -> float:
    return float(np.mean([significance.equivalence(iv, margin, True)[0] for iv in intervals]))


def test_size_and_power_one_seed_accuracy():
    """Accuracy with one seed: the paired t-interval over the per-sample differences (as judge)."""
    rng, n, repeats, margin = np.random.default_rng(1), 2000, 2000, 0.03
    at_margin = [significance.difference_interval(a.astype(float) - b) for a, b in zip(*_paired_correct(rng, n, 0.87, 0.90, repeats))]
    size = _rate(at_margin, margin)
    same = [significance.difference_interval(a.astype(float) - b) for a, b in zip(*_paired_correct(rng, n, 0.90, 0.90, repeats))]
    power = _rate(same, margin)
    print(f"\nTOST acc, one seed, n={n}, margin {margin}: size {size:.3f} (ceiling {_ceiling(repeats):.3f}), power at 0 {power:.3f}")
    assert size <= _ceiling(repeats)
    assert power >= 0.8


def test_size_and_power_one_seed_bootstrap():
    """A metric resampled by the paired bootstrap (MAE: its true difference is known), both
    models on the same resamples, percentile interval (as judge)."""
    rng, n, repeats, margin = np.random.default_rng(2), 800, 300, 0.05
    target = np.zeros(n)
    scale = lambda mae: mae / math.sqrt(2 / math.pi)  # noqa: E731 - E|N(0, s)| = s sqrt(2/pi)

    def interval(mae_a, mae_b, seed):  # errors correlated (rho 0.9), as models err on the same hard samples
        common, own = rng.normal(size=(2, n, 1)), rng.normal(size=(2, n, 1))
        a = Kept({"pred": (0.9 * common[0] + math.sqrt(0.19) * own[0]) * scale(mae_a)}, target[:, None], 1)
        b = Kept({"pred": (0.9 * common[0] + math.sqrt(0.19) * own[1]) * scale(mae_b)}, target[:, None], 1)
        values = significance.bootstrap([MAE.resampler(a), MAE.resampler(b)], n, resamples=400, seed=seed)
        return significance.bootstrap_difference_interval(values[0] - values[1])

    size = _rate([interval(0.5 + margin, 0.5, s) for s in range(repeats)], margin)  # a is worse by exactly the margin
    power = _rate([interval(0.5, 0.5, s) for s in range(repeats)], margin)
    print(f"\nTOST mae (paired bootstrap), n={n}, margin {margin}: size {size:.3f} (ceiling {_ceiling(repeats):.3f}), power at 0 {power:.3f}")
    assert size <= _ceiling(repeats)
    assert power >= 0.8


def test_size_and_power_over_seeds():
    """Several seeds: the t-interval over the per-seed differences (5 seeds)."""
    rng, seeds, repeats, margin, spread = np.random.default_rng(3), 5, 4000, 0.01, 0.004
    size = _rate([significance.difference_interval(rng.normal(-margin, spread, seeds)) for _ in range(repeats)], margin)
    power = _rate([significance.difference_interval(rng.normal(0.0, spread, seeds)) for _ in range(repeats)], margin)
    print(f"\nTOST over {seeds} seeds, sd {spread}, margin {margin}: size {size:.3f} (ceiling {_ceiling(repeats):.3f}), power at 0 {power:.3f}")
    assert size <= _ceiling(repeats)
    assert power >= 0.8


# ---------------------------------------------------------------- the words


def test_words():
    base = {"rank": 2, "model": "m", "status": "done", "p_vs_best": 0.2, "tied_with_best": True, "mde_vs_best": 0.03}
    row = lambda **more: pd.Series(base | more)  # noqa: E731
    assert words(row(), "test_acc") == "not shown different (p = 0.200, MDE 0.030)"  # no margin: as before
    assert words(row(equivalent_to_best=True, non_inferior=True), "test_acc", 0.01) == "equivalent within 0.01"
    not_shown = row(equivalent_to_best=False, non_inferior=False)
    assert words(not_shown, "test_acc", 0.01) == "not shown different (p = 0.200, MDE 0.030 > margin: more evidence needed)"
    worse = row(equivalent_to_best=False, non_inferior=False, p_vs_best=0.0001, tied_with_best=False)
    assert words(worse, "test_acc", 0.01) == "worse (p < 0.001)"


# ---------------------------------------------------------------- what a user sees


@pytest.fixture(scope="module")
def one_seed_run(tmp_path_factory):
    """Three digits models, one seed; macro_f1 and nll kept for the other test families."""
    raw = digits_config([mlp("a", lr=0.2), mlp("b", lr=0.15), mlp("c", lr=0.02)], epochs=2)
    raw["report"] = {"metrics": ["acc", "macro_f1", "nll"]}
    tmp = tmp_path_factory.mktemp("equivalence")
    result = cli("run", write(tmp, raw), "--out", tmp / "run", "--no-plots")
    assert result.exit_code == 0, result.stdout
    return tmp / "run"


def _board(run_dir, *args) -> pd.DataFrame:
    result = cli("leaderboard", run_dir, "--format", "csv", *args)
    assert result.exit_code == 0, result.stdout
    return pd.read_csv(io.StringIO(result.stdout))


def _consistent(t: pd.DataFrame, margin: float, higher: bool) -> None:
    """The best's cells are empty; every other model's verdict is its interval against the margin."""
    assert t.loc[0, COLUMNS].isna().all()
    for _, row in t.iloc[1:].iterrows():
        low, high = row["diff_vs_best_ci90_low"], row["diff_vs_best_ci90_high"]
        assert low <= high
        assert bool(row["equivalent_to_best"]) == (low > -margin and high < margin)
        assert bool(row["non_inferior"]) == (low > -margin if higher else high < margin)


@pytest.mark.parametrize("metric, higher", [(None, True), ("macro_f1", True), ("nll", False)])
def test_margin_gives_the_columns_for_any_metric(one_seed_run, metric, higher):
    args = ["--metric", metric] if metric else []
    assert not set(COLUMNS) & set(_board(one_seed_run, *args).columns)  # no margin, no columns
    t = _board(one_seed_run, *args, "--margin", "0.01")
    _consistent(t, 0.01, higher)
    wide = _board(one_seed_run, *args, "--margin", "100")
    assert wide["equivalent_to_best"].iloc[1:].all()  # everything is within a huge margin
    shown = cli("leaderboard", one_seed_run, *args, "--margin", "100")
    assert shown.exit_code == 0 and "equivalent within 100" in shown.stdout and "equiv" in shown.stdout


def test_over_seeds(seeded_run):
    """Three seeds: the interval is over the per-seed differences; `stuck` (lr 0) is worse."""
    t = _board(seeded_run, "--margin", "0.02")
    _consistent(t, 0.02, True)
    stuck = t[t["model"] == "stuck"].iloc[0]
    assert not stuck["equivalent_to_best"] and not stuck["non_inferior"]


def test_config_key_and_leaderboard_md(tmp_path):
    raw = digits_config([mlp("a", lr=0.2), mlp("b", lr=0.19)], epochs=1, subset=300, test_subset=100)
    raw["report"] = {"margin": 0.5}
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.stdout
    assert "equivalent within 0.5" in result.stdout
    t = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert bool(t.loc[1, "equivalent_to_best"]) and bool(t.loc[1, "non_inferior"])
    md = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "**Equivalence (margin 0.5):**" in md and "equivalent_to_best" in md
    assert _board(tmp_path / "run", "--margin", "0.001")["equivalent_to_best"].iloc[1] == False  # noqa: E712 - --margin wins


@pytest.mark.parametrize("bad", ["0", "-0.01", "nan", "inf"])
def test_bad_margin_is_exit_2(one_seed_run, bad):
    result = cli("leaderboard", one_seed_run, "--margin", bad)
    assert result.exit_code == 2 and "--margin" in result.stdout + result.stderr


@pytest.mark.parametrize("bad", ["0", "-1", '"small"', "true"])
def test_bad_config_margin_is_exit_2(tmp_path, bad):
    raw = digits_config([mlp("a")], epochs=1)
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--set", f"report.margin={bad}")
    assert result.exit_code == 2, result.stdout
    assert "report.margin" in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- across datasets


def test_across_datasets_pure():
    """The TOST over datasets: the t-interval of the per-dataset differences to the best."""
    from compare.report import across, formats  # noqa: PLC0415

    scores = pd.DataFrame({"d1": [0.90, 0.895, 0.70], "d2": [0.80, 0.80, 0.60], "d3": [0.85, 0.84, 0.50], "d4": [0.95, 0.951, 0.75]},
                          index=["best", "close", "far"])
    a = across.compare_scores(scores, {d: d for d in scores.columns}, metric="test_acc", higher=True, margin=0.02)
    t = a.table.set_index("model")
    assert pd.isna(t.loc["best", "equivalent_to_best"])
    low, high = significance.difference_interval(scores.loc["close"] - scores.loc["best"])
    assert (t.loc["close", "diff_vs_best_ci90_low"], t.loc["close", "diff_vs_best_ci90_high"]) == pytest.approx((low, high))
    assert bool(t.loc["close", "equivalent_to_best"]) and not bool(t.loc["far", "non_inferior"])
    assert "equivalent (±0.02)" in formats.across_display(a).columns


def test_across_datasets_cli(tmp_path):
    dirs = []
    for name, data in (("digits", {"subset": 400, "test_subset": 100}), ("digits300", {"subset": 300, "test_subset": 100})):
        raw = digits_config([mlp("a", lr=0.2), mlp("b", lr=0.19)], epochs=1, **data)
        raw["experiment"]["grad_histograms"] = False
        assert cli("run", write(tmp_path, raw), "--out", tmp_path / name, "--no-plots").exit_code == 0
        dirs.append(tmp_path / name)
    shown = cli("leaderboard", *dirs, "--margin", "100")
    assert shown.exit_code == 0, shown.stdout
    assert "equivalent (±100)" in shown.stdout and "TOST over datasets" in shown.stdout
    assert cli("leaderboard", *dirs, "--margin", "0").exit_code == 2

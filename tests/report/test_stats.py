"""Statistics against hand-computed cases and scipy's own implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from runner.report import stats


def test_exact_mcnemar_on_a_2x2_table_with_a_known_p():
    # Discordant pairs b = 1, c = 9: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(9, 1) == pytest.approx(22 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0  # no disagreement: no evidence of a difference


def test_discordant_counts_the_off_diagonal():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    assert stats.discordant(a, b) == (2, 1)  # only A right: samples 1, 4; only B right: sample 2


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.01, math.nan, 0.04]), [0.02, math.nan, 0.04])  # NaN not in the family
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1


def test_t_interval_by_hand_and_against_scipy():
    iv = stats.t_interval([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * s / sqrt(n)
    assert (iv.mean, iv.std, iv.method) == (pytest.approx(0.92), pytest.approx(0.02), "t")
    assert (iv.low, iv.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    x = [1.0, 2.5, 2.0, 4.0, 3.3]
    low, high = sp.t.interval(0.95, df=len(x) - 1, loc=np.mean(x), scale=sp.sem(x))
    assert (stats.t_interval(x).low, stats.t_interval(x).high) == (pytest.approx(low), pytest.approx(high))
    one = stats.t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and one.method == "none"


def test_wilson_interval_matches_scipy_and_stays_in_range():
    for k, n in ((45, 50), (0, 10), (10, 10), (412, 450)):
        ci = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson_interval(k, n) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_interval_uses_wilson_for_one_seed_and_clips_t():
    one = stats.accuracy_interval([0.9], n_test=450)
    assert one.method == "wilson" and (one.low, one.high) == pytest.approx(stats.wilson_interval(405, 450))
    wide = stats.accuracy_interval([0.2, 0.9, 0.99], n_test=450)
    assert wide.method == "t" and wide.low == 0.0 and wide.high == 1.0


def test_paired_test_with_one_seed_is_exact_mcnemar():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.8, rng.random(200) < 0.7
    result = stats.paired_over_seeds(a[None], b[None])
    assert (result.wins, result.losses) == stats.discordant(a, b)
    assert result.p == stats.mcnemar_exact(*stats.discordant(a, b))
    assert result.p == pytest.approx(sp.binomtest(result.wins, result.wins + result.losses, 0.5).pvalue)


def test_paired_test_over_seeds_counts_each_test_sample_once():
    # 3 seeds x 5 samples. Sample 0: A right 3/3, B 0/3 -> favours A once (pooling would count it 3 times).
    a = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 0], [1, 1, 0, 1, 1]], dtype=bool)
    b = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=bool)
    # d = A - B per sample: [3, 0, -2, 0, 1] -> wins 2 (samples 0, 4), losses 1 (sample 2)
    result = stats.paired_over_seeds(a, b)
    assert (result.wins, result.losses, result.seeds, result.samples) == (2, 1, 3, 5)
    assert result.p == pytest.approx(sp.binomtest(2, 3, 0.5).pvalue)
    with pytest.raises(ValueError):
        stats.paired_over_seeds(a, b[:2])


def test_pareto_front():
    front = stats.pareto_front([1, 2, 3, 4, math.nan, 2], [0.5, 0.7, 0.6, 0.9, 0.99, 0.7])
    assert front.tolist() == [True, True, False, True, False, True]  # equal points are both on the front


def test_confusion_matrix_counts_true_by_predicted():
    got = stats.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(got, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


# ---------------------------------------------------------------- how much evidence a verdict has
# Each estimate is checked against a simulation of the very test it speaks for: paired
# Bernoulli outcomes with a known difference, tested many times (fixed seeds).

SIMULATIONS = 2000  # binomial standard error of an empirical power near 0.8: 0.9 points


def simulated_mcnemar_power(n: int, p_discordant: float, delta: float, rng) -> float:
    """Share of simulated test sets on which the exact McNemar test rejects at 0.05."""
    shares = [(p_discordant + delta) / 2, (p_discordant - delta) / 2, 1 - p_discordant]  # only A right, only B right, agree
    counts = rng.multinomial(n, shares, size=SIMULATIONS)
    return float(np.mean([stats.mcnemar_exact(int(b), int(c)) < 0.05 for b, c, _ in counts]))


@pytest.mark.parametrize("n, p_discordant", [(450, 0.06), (2000, 0.15), (10000, 0.03)])
def test_the_one_seed_mde_is_the_difference_mcnemar_detects_80_percent_of_the_time(n, p_discordant):
    mde = stats.mde_mcnemar(n, p_discordant)
    assert 0 < mde < p_discordant
    assert stats.mcnemar_power(n, p_discordant, mde) == pytest.approx(0.8, abs=0.01)
    empirical = simulated_mcnemar_power(n, p_discordant, mde, np.random.default_rng(n))
    assert empirical == pytest.approx(0.8, abs=0.03)
    # Half the MDE is detected far less often: the MDE is a threshold, not a formality.
    assert simulated_mcnemar_power(n, p_discordant, mde / 2, np.random.default_rng(1)) < 0.5


def test_too_few_discordant_pairs_resolve_nothing():
    assert stats.mde_mcnemar(40, 0.05) == math.inf  # 2 discordant pairs: never p < 0.05
    assert stats.mde_mcnemar(450, 0.0) == math.inf


def simulated_seed_power(seeds: int, p_a: float, p_b: float, n_test: int, rng) -> float:
    """Share of simulated experiments (each `seeds` independent trainings scored on n_test
    samples) on which the paired t-test over per-seed accuracy differences rejects at 0.05."""
    acc_a = rng.binomial(n_test, p_a, size=(SIMULATIONS, seeds)) / n_test
    acc_b = rng.binomial(n_test, p_b, size=(SIMULATIONS, seeds)) / n_test
    p = sp.ttest_rel(acc_a, acc_b, axis=1).pvalue
    return float(np.mean(p < 0.05))


def test_seeds_needed_is_the_seed_count_the_paired_t_test_needs_for_80_percent_power():
    p_a, p_b, n_test = 0.91, 0.90, 2000
    sd = math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / n_test)  # of one seed's difference
    needed = int(stats.seeds_needed(p_a - p_b, sd))
    assert 5 <= needed <= 40
    assert simulated_seed_power(needed, p_a, p_b, n_test, np.random.default_rng(0)) == pytest.approx(stats.paired_t_power(needed, (p_a - p_b) / sd), abs=0.03)
    assert simulated_seed_power(needed, p_a, p_b, n_test, np.random.default_rng(1)) >= 0.77
    assert simulated_seed_power(max(2, needed // 2), p_a, p_b, n_test, np.random.default_rng(2)) < 0.7
    assert stats.seeds_needed(0.0, sd) == math.inf and math.isnan(stats.seeds_needed(math.nan, sd))


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_the_seed_mde_is_detected_80_percent_of_the_time(seeds):
    n_test, mde = 1000, 0.0
    for _ in range(3):  # accuracies 0.5 -+ mde/2: the per-seed spread, and with it the MDE, settle
        sd = math.sqrt(2 * (0.25 - mde**2 / 4) / n_test)
        mde = stats.mde_over_seeds(sd, seeds)
    empirical = simulated_seed_power(seeds, 0.5 + mde / 2, 0.5 - mde / 2, n_test, np.random.default_rng(seeds))
    assert empirical == pytest.approx(0.8, abs=0.03)
    assert stats.mde_over_seeds(sd, 2) > 3 * stats.mde_over_seeds(sd, 3)  # t(0.975, 1) = 12.7
    assert stats.t_quantile_note(2).startswith("2 seeds: t(0.975,1) = 12.7")

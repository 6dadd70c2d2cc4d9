"""runner/metrics/significance.py against hand-computed cases and scipy's own implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from compare.metrics import significance


def test_exact_mcnemar_on_a_2x2_table_with_a_known_p():
    # Discordant pairs b = 1, c = 9: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024.
    assert significance.mcnemar_exact(1, 9) == pytest.approx(22 / 1024, abs=1e-15)
    assert significance.mcnemar_exact(9, 1) == pytest.approx(22 / 1024, abs=1e-15)
    assert significance.mcnemar_exact(5, 5) == 1.0
    assert significance.mcnemar_exact(0, 0) == 1.0  # no disagreement: no evidence of a difference


def test_discordant_counts_the_off_diagonal():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    assert significance.discordant(a, b) == (2, 1)  # only A right: samples 1, 4; only B right: sample 2


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    got = significance.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(significance.holm([0.01, math.nan, 0.04]), [0.02, math.nan, 0.04])  # NaN not in the family
    np.testing.assert_allclose(significance.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1


def test_t_interval_by_hand_and_against_scipy():
    iv = significance.t_interval([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * s / sqrt(n)
    assert (iv.mean, iv.std, iv.method) == (pytest.approx(0.92), pytest.approx(0.02), "t")
    assert (iv.low, iv.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    x = [1.0, 2.5, 2.0, 4.0, 3.3]
    low, high = sp.t.interval(0.95, df=len(x) - 1, loc=np.mean(x), scale=sp.sem(x))
    assert (significance.t_interval(x).low, significance.t_interval(x).high) == (pytest.approx(low), pytest.approx(high))
    one = significance.t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and one.method == "none"


def test_wilson_interval_matches_scipy_and_stays_in_range():
    for k, n in ((45, 50), (0, 10), (10, 10), (412, 450)):
        ci = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert significance.wilson_interval(k, n) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert significance.wilson_interval(0, 10)[0] == 0.0 and significance.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_interval_uses_wilson_for_one_seed_and_clips_t():
    one = significance.accuracy_interval([0.9], n_test=450)
    assert one.method == "wilson" and (one.low, one.high) == pytest.approx(significance.wilson_interval(405, 450))
    wide = significance.accuracy_interval([0.2, 0.9, 0.99], n_test=450)
    assert wide.method == "t" and wide.low == 0.0 and wide.high == 1.0


def test_paired_test_with_one_seed_is_exact_mcnemar():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.8, rng.random(200) < 0.7
    result = significance.paired_over_seeds(a[None], b[None])
    assert (result.wins, result.losses) == significance.discordant(a, b)
    assert result.p == significance.mcnemar_exact(*significance.discordant(a, b))
    assert result.p == pytest.approx(sp.binomtest(result.wins, result.wins + result.losses, 0.5).pvalue)


def test_paired_test_over_seeds_counts_each_test_sample_once():
    # 3 seeds x 5 samples. Sample 0: A right 3/3, B 0/3 -> favours A once (pooling would count it 3 times).
    a = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 0], [1, 1, 0, 1, 1]], dtype=bool)
    b = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=bool)
    # d = A - B per sample: [3, 0, -2, 0, 1] -> wins 2 (samples 0, 4), losses 1 (sample 2)
    result = significance.paired_over_seeds(a, b)
    assert (result.wins, result.losses, result.seeds, result.samples) == (2, 1, 3, 5)
    assert result.p == pytest.approx(sp.binomtest(2, 3, 0.5).pvalue)
    with pytest.raises(ValueError):
        significance.paired_over_seeds(a, b[:2])


def test_the_many_pairs_mcnemar_is_the_exact_one():
    wins, losses = np.array([0, 3, 10, 7, 40]), np.array([0, 12, 10, 0, 22])  # racing tests every pair at once
    assert np.allclose(significance.mcnemar_exact(wins, losses), [significance.mcnemar_exact(int(b), int(c)) for b, c in zip(wins, losses)])


def test_mcnemar_is_scipys_binomtest_to_the_last_bit():
    wins, losses = np.meshgrid(np.arange(0, 80), np.arange(0, 80))
    wins, losses = np.r_[wins.ravel(), 4_000, 4_950, 17], np.r_[losses.ravel(), 4_100, 5_050, 9_000]
    exact = [1.0 if b + c == 0 else sp.binomtest(int(b), int(b + c), 0.5).pvalue for b, c in zip(wins, losses)]
    assert np.array_equal(significance.mcnemar_exact(wins, losses), exact)
    assert significance.mcnemar_exact(3, 12) == exact[12 * 80 + 3] and isinstance(significance.mcnemar_exact(3, 12), float)


def test_seeds_pair_by_name_else_in_order():
    assert significance.pair_seeds({0: "a", 1: "b", 2: "c"}, {2: "x", 0: "y"}) == [(0, 0), (2, 2)]
    assert significance.pair_seeds({5: "a", 3: "b"}, {1: "x", 2: "y", 4: "z"}) == [(3, 1), (5, 2)]  # disjoint: in order

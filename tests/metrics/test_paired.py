"""The paired tests behind the leaderboard (runner/report/verdict.py), one metric per family,
by simulation with fixed seeds:

- A/A (soundness): two predictors drawn from the same noise model; at alpha = 0.05 the test
  may reject at most 5 % of the time (plus 3 binomial standard errors of the simulation).
- A/B (power): a known difference is found in most repeats, at roughly the power the
  family's MDE claims (power.mde_mcnemar / power.mde_from_se).

Each test is called the way verdict.judge calls it. `pytest -s` prints the measured rates;
docs/metrics.md records them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

from compare.metrics import power, significance
from compare.metrics.builtin import Kept, metrics_for

ALPHA = 0.05
RESAMPLES = 999  # fewer than the report's 10,000, to stay fast; the tests are valid at any B
Z = sps.norm.ppf(1 - ALPHA / 2) + sps.norm.ppf(0.8)

ACC = metrics_for("classification", 4)["acc"]
MACRO_F1 = metrics_for("classification", 4)["macro_f1"]
MAE = metrics_for("regression", 1)["mae"]
assert (ACC.family, MAE.family, MACRO_F1.family) == ("mcnemar", "additive", "bootstrap")


def _ceiling(repeats: int, rate: float = ALPHA) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / repeats)


def _normal_power(delta: float, se: float) -> float:
    """Power of a two-sided level-0.05 z-test of a difference `delta` with standard error `se`
    (the approximation mde_from_se inverts)."""
    z = sps.norm.ppf(1 - ALPHA / 2)
    return float(sps.norm.sf(z - delta / se) + sps.norm.cdf(-z - delta / se))


# ---------------------------------------------------------------- models


def _classifier(rng, target: np.ndarray, p_correct: np.ndarray, classes: int) -> Kept:
    """top-1 is the target with probability p_correct (per sample), else another class at random."""
    right = rng.random(len(target)) < p_correct
    wrong = (target + rng.integers(1, classes, size=len(target))) % classes
    return Kept({"top1": np.where(right, target, wrong)}, target, classes)


def _regressor(rng, target: np.ndarray, scale: np.ndarray) -> Kept:
    return Kept({"pred": target + rng.normal(size=target.shape) * scale}, target, 1)


# ---------------------------------------------------------------- the three families, as verdict.judge runs them


def mcnemar_p(a: Kept, b: Kept) -> significance.PairedResult:
    return significance.paired_over_seeds(ACC.per_sample(a)[None] > 0.5, ACC.per_sample(b)[None] > 0.5)


def additive_p(metric, a: Kept, b: Kept) -> tuple[float, float]:
    """(p, the MDE verdict.judge states) for one seed."""
    d = metric.per_sample(a) - metric.per_sample(b)
    return significance.sign_flip_p(d, resamples=RESAMPLES), power.mde_from_se(float(np.std(d, ddof=1)) / math.sqrt(len(d)))


def bootstrap_p(metric, a: Kept, b: Kept) -> tuple[float, float]:
    """(p, the MDE verdict.judge states) for one seed: both models on the same resamples."""
    values = significance.bootstrap([metric.resampler(a), metric.resampler(b)], len(a), resamples=RESAMPLES)
    delta = values[0] - values[1]
    observed = metric.value(a) - metric.value(b)
    return significance.bootstrap_p(observed, delta), power.mde_from_se(float(np.nanstd(delta, ddof=1)))


# ---------------------------------------------------------------- A/A


def test_aa_mcnemar_acc():
    rng = np.random.default_rng(100)
    repeats, n, classes = 300, 200, 4
    rejected = 0
    for _ in range(repeats):
        target = rng.integers(0, classes, size=n)
        difficulty = rng.beta(4, 2, size=n)  # shared: both models find the same samples hard
        a, b = (_classifier(rng, target, difficulty, classes) for _ in range(2))
        rejected += mcnemar_p(a, b).p < ALPHA
    rate = rejected / repeats
    print(f"\nA/A acc (exact McNemar), n={n}, {repeats} repeats: rejection rate {rate:.3f} (ceiling {_ceiling(repeats):.3f})")
    assert rate <= _ceiling(repeats)


def test_aa_sign_flip_mae():
    rng = np.random.default_rng(200)
    repeats, n = 300, 200
    rejected = 0
    for _ in range(repeats):
        target = rng.normal(size=(n, 1))
        scale = rng.gamma(2.0, 0.5, size=(n, 1))  # heteroscedastic, shared by both models
        a, b = _regressor(rng, target, scale), _regressor(rng, target, scale)
        rejected += additive_p(MAE, a, b)[0] < ALPHA
    rate = rejected / repeats
    print(f"\nA/A mae (sign-flip, {RESAMPLES} flips), n={n}, {repeats} repeats: rejection rate {rate:.3f} (ceiling {_ceiling(repeats):.3f})")
    assert rate <= _ceiling(repeats)


def test_aa_bootstrap_macro_f1():
    rng = np.random.default_rng(300)
    repeats, n, classes = 300, 200, 4
    rejected = 0
    for _ in range(repeats):
        target = rng.choice(classes, size=n, p=[0.4, 0.3, 0.2, 0.1])  # imbalanced: macro F1 != accuracy
        difficulty = rng.beta(4, 2, size=n)
        a, b = (_classifier(rng, target, difficulty, classes) for _ in range(2))
        rejected += bootstrap_p(MACRO_F1, a, b)[0] < ALPHA
    rate = rejected / repeats
    print(f"\nA/A macro_f1 (paired bootstrap, {RESAMPLES} resamples), n={n}, {repeats} repeats: rejection rate {rate:.3f} (ceiling {_ceiling(repeats):.3f})")
    assert rate <= _ceiling(repeats)


# ---------------------------------------------------------------- A/B


def test_ab_mcnemar_acc_ten_points():
    """A right with probability 0.8, B with 0.7, independently per sample: the discordance is
    0.8 * 0.3 + 0.2 * 0.7 = 0.38 and the exact power is power.mcnemar_power(400, 0.38, 0.10)."""
    rng = np.random.default_rng(400)
    repeats, n, classes = 200, 400, 4
    rejected, mdes = 0, []
    for _ in range(repeats):
        target = rng.integers(0, classes, size=n)
        a, b = _classifier(rng, target, np.full(n, 0.8), classes), _classifier(rng, target, np.full(n, 0.7), classes)
        result = mcnemar_p(a, b)
        rejected += result.p < ALPHA
        mdes.append(power.mde_mcnemar(n, float(np.mean(ACC.per_sample(a) != ACC.per_sample(b)))))
    rate = rejected / repeats
    claimed = power.mcnemar_power(n, 0.38, 0.10)
    print(f"\nA/B acc 80% vs 70%, n={n}, {repeats} repeats: rejection rate {rate:.3f}; claimed power {claimed:.3f}; median MDE {np.median(mdes):.4f}")
    assert rate > 0.5
    assert abs(rate - claimed) < 0.1
    assert (np.median(mdes) < 0.10) == (claimed > 0.8)  # the MDE is below the true difference iff the power exceeds 80 %


def test_ab_mcnemar_at_its_mde():
    """A true difference equal to mde_mcnemar(n, p_d) is found in about 80 % of repeats."""
    rng = np.random.default_rng(401)
    repeats, n, p_d = 200, 400, 0.3
    mde = power.mde_mcnemar(n, p_d)
    rejected = 0
    for _ in range(repeats):
        discordant = rng.random(n) < p_d
        a_wins = rng.random(n) < (p_d + mde) / (2 * p_d)
        both_right = rng.random(n) < 0.7
        a = np.where(discordant, a_wins, both_right)
        b = np.where(discordant, ~a_wins, both_right)
        rejected += significance.paired_over_seeds(a[None], b[None]).p < ALPHA
    rate = rejected / repeats
    print(f"\nA/B acc at the McNemar MDE ({mde:.4f}, n={n}, discordance {p_d}), {repeats} repeats: rejection rate {rate:.3f} (claimed 0.80)")
    assert abs(rate - 0.8) < 0.1


def test_ab_sign_flip_mae_at_its_mde():
    """A's errors N(0, 1), B's N(0, s) per sample: mean |e| differs by (s - 1) sqrt(2/pi) and the
    per-sample difference has sd sqrt((1 + s^2)(1 - 2/pi)); s is chosen so that the difference
    equals the MDE (z_0.975 + z_0.8) sd / sqrt(n). Expected power: about 80 %."""
    rng = np.random.default_rng(500)
    repeats, n = 200, 400
    c = math.sqrt(2 / math.pi)

    def gap(s):
        return (s - 1) * c - Z * math.sqrt((1 + s * s) * (1 - 2 / math.pi)) / math.sqrt(n)

    s = brentq(gap, 1.0, 3.0)
    true_delta = (s - 1) * c
    rejected, mdes = 0, []
    for _ in range(repeats):
        target = rng.normal(size=(n, 1))
        p, mde = additive_p(MAE, _regressor(rng, target, np.full((n, 1), s)), _regressor(rng, target, np.ones((n, 1))))
        rejected += p < ALPHA
        mdes.append(mde)
    rate = rejected / repeats
    print(f"\nA/B mae at the additive MDE (true difference {true_delta:.4f}, median stated MDE {np.median(mdes):.4f}, n={n}), {repeats} repeats: rejection rate {rate:.3f} (claimed 0.80)")
    assert abs(np.median(mdes) / true_delta - 1) < 0.1
    assert abs(rate - 0.8) < 0.1


def test_ab_bootstrap_macro_f1():
    """A right with probability 0.8, B with 0.7 (n = 400, imbalanced classes): the bootstrap
    test finds it in most repeats, at about the power its stated SE implies."""
    rng = np.random.default_rng(600)
    repeats, n, classes = 200, 400, 4
    rejected, deltas, mdes = 0, [], []
    for _ in range(repeats):
        target = rng.choice(classes, size=n, p=[0.4, 0.3, 0.2, 0.1])
        a, b = _classifier(rng, target, np.full(n, 0.8), classes), _classifier(rng, target, np.full(n, 0.7), classes)
        p, mde = bootstrap_p(MACRO_F1, a, b)
        rejected += p < ALPHA
        deltas.append(MACRO_F1.value(a) - MACRO_F1.value(b))
        mdes.append(mde)
    rate = rejected / repeats
    true_delta, se = float(np.mean(deltas)), float(np.median(mdes)) / Z
    claimed = _normal_power(true_delta, se)
    print(f"\nA/B macro_f1 80% vs 70% right (mean difference {true_delta:.4f}, median stated MDE {np.median(mdes):.4f}, n={n}), {repeats} repeats: rejection rate {rate:.3f}; power claimed by the stated SE {claimed:.3f}")
    assert rate > 0.5
    assert abs(rate - claimed) < 0.12

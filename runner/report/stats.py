"""Statistics behind the leaderboard. Pure functions: arrays and numbers in, numbers out.

Two questions, two sources of noise:
- "How sure are we of a model's accuracy?" -> an interval. With several seeds, a Student-t
  interval over the per-seed values (variation from training randomness on this test set).
  With one seed there is nothing to spread over seeds, so a Wilson interval over the test
  samples (variation from which test samples were drawn).
- "Is model A really better than model B?" -> a paired test on the SAME test samples,
  exact McNemar (a sign test on the samples the two models disagree on), then Holm's
  step-down correction because the best model is compared with every other one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05  # tied_with_best is "Holm-corrected p >= ALPHA"


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN with fewer than two values
    low: float
    high: float
    method: str  # "t" (over seeds), "wilson" (over test samples) or "none"


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of `values` (NaNs dropped): mean +- t(1-a/2, n-1) * s / sqrt(n).
    Fewer than two values give NaN bounds (no spread to estimate)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, "none")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, "none")
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, "t")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes out of n); stays inside [0, 1] and
    behaves at 0 % and 100 %, unlike the normal (Wald) interval."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(per_seed_acc, n_test: int | None, confidence: float = 0.95) -> Interval:
    """Several seeds: t-interval over seeds, clipped to [0, 1] (an accuracy cannot leave it,
    so clipping keeps the coverage). One seed: Wilson over the n_test test samples."""
    t = t_interval(per_seed_acc, confidence)
    if t.method == "none" and np.isfinite(t.mean) and n_test:
        low, high = wilson_interval(round(t.mean * n_test), n_test, confidence)
        return Interval(t.mean, t.std, low, high, "wilson")
    if t.method == "t":
        return Interval(t.mean, t.std, max(0.0, t.low), min(1.0, t.high), "t")
    return t


def discordant(correct_a, correct_b) -> tuple[int, int]:
    """(b, c): samples only A got right, samples only B got right (the McNemar off-diagonal)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (conditional) McNemar test: under H0 each of the b + c discordant samples is
    equally likely to favour either model, so b ~ Binomial(b + c, 1/2); two-sided p.
    No disagreement at all is no evidence of a difference: p = 1."""
    n = b + c
    if n == 0:
        return 1.0
    return float(stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)


def mcnemar_exact_many(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """mcnemar_exact for many pairs at once (racing tests every pair at each look): the two-sided
    p of the symmetric Binomial(n, 1/2) is twice the smaller tail, and 1 without discordant pairs."""
    return np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(wins, losses), wins + losses, 0.5))


@dataclass(frozen=True)
class PairedResult:
    p: float  # two-sided, uncorrected
    wins: int  # test samples where A was right in more seeds than B
    losses: int  # test samples where B was right in more seeds than A
    seeds: int  # seeds paired
    samples: int  # test samples


def paired_over_seeds(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedResult:
    """Paired test of A vs B on the same test samples, combined over seeds.

    `correct_a`, `correct_b`: bool arrays (seeds, samples); row s of both comes from seed s
    (same test samples in the same order).

    Method: for each test sample i, d_i = (#seeds A right) - (#seeds B right); then an exact
    two-sided sign test (binomial, p = 1/2) on the samples with d_i != 0. With one seed this
    IS the exact McNemar test (d_i != 0 exactly on the discordant pairs).

    Why not pool the per-seed McNemar counts, or combine per-seed p-values with Fisher or
    Stouffer? Every seed is scored on the same test samples, and whether a sample favours
    A tends to repeat across seeds (hard or mislabelled samples). Pooling counts the same
    sample up to n_seeds times as if it were new evidence, and Fisher/Stouffer assume
    independent p-values; both are anti-conservative here. The test sample is the
    independent unit, so the test is run over samples. As in McNemar's test, the trained
    models are held fixed and the test samples are independent draws: the d_i are then
    independent, and under H0 "on a random test sample, A's seeds beat B's as often as the
    reverse" (P(d > 0) = P(d < 0)) the signs of the non-zero d_i are fair coins, so the
    sign test is exact. Seeds still count: a sample A gets right in 3/3 seeds and B in 1/3
    is one sample favouring A, while chance flips that cancel across seeds drop out.
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=bool)), np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape:
        raise ValueError(f"paired test needs equal shapes (seeds, samples), got {a.shape} and {b.shape}")
    d = a.sum(axis=0).astype(int) - b.sum(axis=0).astype(int)
    wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
    return PairedResult(mcnemar_exact(wins, losses), wins, losses, a.shape[0], a.shape[1])


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate; valid under
    any dependence between the tests, which matters: every comparison shares the best model).
    NaN entries are left NaN and are not counted in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # monotone: never below an earlier step
        out[i] = running
    return out


POWER = 0.80  # the power the minimum detectable effect and seeds_needed are stated at


def mcnemar_power(n: int, p_discordant: float, delta: float, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided exact McNemar test at level `alpha` on `n` paired samples,
    when a share `p_discordant` of them is discordant and A's accuracy exceeds B's by `delta`.
    The number of discordant pairs D ~ Binomial(n, p_d); given D, the pairs favouring A
    b ~ Binomial(D, (p_d + delta) / (2 p_d)); the test rejects when b <= k_D or b >= D - k_D,
    k_D the largest count whose doubled Binomial(D, 1/2) tail is below alpha."""
    if n <= 0 or p_discordant <= 0:
        return 0.0
    d = np.arange(n + 1)
    weight = stats.binom.pmf(d, n, p_discordant)
    keep = weight > 1e-12
    d, weight = d[keep], weight[keep]
    k = stats.binom.ppf(alpha / 2, d, 0.5) - 1  # every b <= k has 2 * cdf(b) < alpha
    q = min(1.0, max(0.0, (p_discordant + delta) / (2 * p_discordant)))
    reject = np.where(k >= 0, stats.binom.cdf(k, d, q) + stats.binom.sf(d - k - 1, d, q), 0.0)
    return float(np.sum(weight * reject))


def mde_mcnemar(n: int, p_discordant: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest accuracy difference the exact McNemar test detects with `power` on `n`
    test samples at the observed discordance rate (one seed). inf: not even all discordant
    pairs favouring one model would be detected that often."""
    if n <= 0 or not np.isfinite(p_discordant) or p_discordant <= 0 or mcnemar_power(n, p_discordant, p_discordant, alpha) < power:
        return math.inf
    low, high = 0.0, p_discordant
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if mcnemar_power(n, p_discordant, mid, alpha) >= power else (mid, high)
    return high


def paired_t_power(seeds: int, effect: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test over `seeds` per-seed differences whose mean is
    `effect` standard deviations (noncentral t with seeds - 1 degrees of freedom)."""
    if seeds < 2:
        return 0.0
    df = seeds - 1
    nc = abs(effect) * math.sqrt(seeds)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    # Far in the tail scipy's noncentral t returns NaN; the power there is 1 to machine precision.
    return power if math.isfinite(power) else 1.0


def mde_over_seeds(sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean per-seed difference the paired t-test over `seeds` seeds detects with
    `power`, when the per-seed differences spread with standard deviation `sd`."""
    if seeds < 2 or not np.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    effect = optimize.brentq(lambda e: paired_t_power(seeds, e, alpha) - power, 1e-9, 1e3)
    return float(effect * sd)


def seeds_needed(mean_diff: float, sd: float, alpha: float = ALPHA, power: float = POWER, most: int = 100_000) -> float:
    """How many seeds a paired t-test over per-seed differences needs to detect `mean_diff` with
    `power`, taking the observed per-seed spread `sd` as the truth. inf: no difference, or more
    than `most` seeds."""
    if not (np.isfinite(mean_diff) and np.isfinite(sd)):
        return math.nan
    if mean_diff == 0:
        return math.inf
    if sd == 0:
        return 2.0
    effect = abs(mean_diff) / sd
    if paired_t_power(most, effect, alpha) < power:
        return math.inf
    low, high = 1, most  # power(low) < power <= power(high); power grows with the seeds
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if paired_t_power(mid, effect, alpha) >= power else (mid, high)
    return float(high)


def t_quantile_note(seeds: int) -> str | None:
    """The plain warning for intervals over 2 seeds (None otherwise); the leaderboard's notes
    and the plots' titles both say it."""
    if seeds != 2:
        return None
    return f"2 seeds: t(0.975,1) = {stats.t.ppf(0.975, 1):.1f}; intervals are very wide; use ≥ 3 seeds"


def pareto_front(cost, value) -> np.ndarray:
    """Mask of the points no other point beats on both axes (lower-or-equal cost and
    higher-or-equal value, strictly better on one). NaN points are never on the front."""
    c, v = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    front = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        front[i] = not dominated.any()
    return front


def confusion_matrix(target, predicted, n_classes: int) -> np.ndarray:
    """counts[true, predicted] as an (n_classes, n_classes) int array."""
    t, p = np.asarray(target, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)

"""Every paired test and interval behind a verdict, once (sacrebleu's significance module is
the model): the leaderboard, the verdict of any metric, racing and the family verdict call
these. Pure functions: arrays and numbers in, numbers out. How much a verdict can resolve
(power, MDE, seeds needed): runner/metrics/power.py.

Two questions, two sources of noise:
- "How sure are we of a model's value?" -> an interval. With several seeds, a Student-t
  interval over the per-seed values (variation from training randomness on this test set).
  With one seed, over the test samples: Wilson for a proportion, else a percentile bootstrap.
- "Is model A really better than model B?" -> a paired test on the SAME test samples, in the
  metric's family: exact McNemar (a sign test on the samples the two models disagree on) for
  a per-sample 0/1, the sign-flip permutation test for a per-sample mean, the paired
  bootstrap otherwise; then Holm's step-down correction, because the best model is compared
  with every other one.

- The bootstrap draws ONE set of resamples (rows of multinomial counts over the test samples)
  and evaluates every model on the same rows, so the difference between two models is paired
  (Koehn 2004; Berg-Kirkpatrick et al. 2012; sacrebleu's significance module). Drawing each
  model's resamples independently, as some tools do, throws the pairing away.
- The sign-flip test for an additive metric flips the sign of each sample's difference at
  random: under H0 (the two models' per-sample values are exchangeable) every flip is equally
  likely, so p = (c + 1) / (B + 1) is valid at any sample size.
- p-values of resampling tests are (c + 1) / (B + 1): never 0 (Phipson & Smyth 2010).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # tied_with_best is "Holm-corrected p >= ALPHA"
RESAMPLES = 10_000  # bootstrap resamples and sign flips per test (a p-value resolves 1e-4)
SEED = 0  # fixed: the same report gives the same numbers
BLOCK = 2_000_000  # weights per block (rows x samples): bounds one block's memory to tens of MB


# ---------------------------------------------------------------- intervals

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


def within(interval: Interval, bounds: tuple[float, float]) -> Interval:
    """A t-interval clipped to the values the metric can take (an F1 above 1, an error below 0):
    the mean can never be outside them, so clipping only drops impossible values and keeps the
    coverage. Wilson and percentile intervals already stay inside."""
    low, high = bounds
    if interval.method != "t":
        return interval
    return Interval(interval.mean, interval.std, max(low, interval.low), min(high, interval.high), "t")


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of resampled values; NaN where over 10 % are not finite."""
    v = values[np.isfinite(values)]
    if len(v) < 0.9 * len(values) or not len(v):
        return math.nan, math.nan
    return float(np.quantile(v, (1 - confidence) / 2)), float(np.quantile(v, (1 + confidence) / 2))


def t_quantile_note(seeds: int) -> str | None:
    """The plain warning for intervals over 2 seeds (None otherwise); the leaderboard's notes
    and the plots' titles both say it."""
    if seeds != 2:
        return None
    return f"2 seeds: t(0.975,1) = {stats.t.ppf(0.975, 1):.1f}; intervals are very wide; use ≥ 3 seeds"


# ---------------------------------------------------------------- a per-sample 0/1: exact McNemar

def discordant(correct_a, correct_b) -> tuple[int, int]:
    """(b, c): samples only A got right, samples only B got right (the McNemar off-diagonal)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_exact(wins, losses):
    """Exact (conditional) McNemar test: under H0 each of the b + c discordant samples is
    equally likely to favour either model, so b ~ Binomial(b + c, 1/2); two-sided p, the
    smaller tail and its mirror (scipy.stats.binomtest's p to the last bit). No disagreement
    at all is no evidence of a difference: p = 1. Counts give a float; arrays (racing tests
    every pair at each look) give an array."""
    b, c = np.asarray(wins), np.asarray(losses)
    n, low = b + c, np.minimum(b, c)
    p = np.where(b == c, 1.0, np.minimum(1.0, stats.binom.cdf(low, n, 0.5) + stats.binom.sf(n - low - 1, n, 0.5)))
    return float(p) if p.ndim == 0 else p


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


def pair_seeds(a, b) -> list[tuple[int, int]]:
    """Which seeds of two models are paired: the seeds both have (independent training runs
    either way); runs with disjoint seed lists pair in order. Equal counts keep the sign
    test's null exact."""
    common = sorted(set(a) & set(b))
    return [(s, s) for s in common] if common else list(zip(sorted(a), sorted(b)))


# ---------------------------------------------------------------- a per-sample mean: sign flips

def sign_flip_p(d: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided paired sign-flip permutation test of mean(d) = 0 (d: per-sample differences)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    observed = abs(d.sum())
    if not len(d) or observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // len(d))
    c, done = 0, 0
    while done < resamples:
        b = min(rows, resamples - done)
        signs = rng.integers(0, 2, size=(b, len(d)), dtype=np.int8) * 2 - 1
        c += int(np.sum(np.abs(signs @ d) >= observed * (1 - 1e-12)))
        done += b
    return (c + 1) / (resamples + 1)


# ---------------------------------------------------------------- anything else: the paired bootstrap

def resample_blocks(n: int, resamples: int = RESAMPLES, seed: int = SEED):
    """Yield blocks of bootstrap weights [b, n] (float32 counts that sum to n per row)."""
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // max(n, 1))
    done = 0
    while done < resamples:
        b = min(rows, resamples - done)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        yield counts.astype(np.float32)
        done += b


def bootstrap(models: Sequence[Callable[[np.ndarray], np.ndarray]], n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[models, resamples]: each model's metric on the same resamples of the n test samples."""
    parts: list[list[np.ndarray]] = [[] for _ in models]
    for w in resample_blocks(n, resamples, seed) if models else ():  # each block drawn once, for every model
        for part, model in zip(parts, models):
            part.append(model(w))
    return np.stack([np.concatenate(p) for p in parts]) if models else np.zeros((0, resamples))


def bootstrap_p(observed: float, diffs: np.ndarray) -> float:
    """Two-sided p of a paired bootstrap difference: how often a resampled difference lies at
    least |observed| away from the observed one (the bootstrap's distribution shifted to H0)."""
    d = diffs[np.isfinite(diffs)]
    if not len(d) or not math.isfinite(observed):
        return math.nan
    if observed == 0:
        return 1.0
    c = int(np.sum(np.abs(d - observed) >= abs(observed) * (1 - 1e-12)))
    return (c + 1) / (len(d) + 1)


# ---------------------------------------------------------------- multiplicity

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


# ---------------------------------------------------------------- equivalence: TOST with a margin

def difference_interval(d, alpha: float = ALPHA) -> tuple[float, float]:
    """The (1 - 2 alpha) Student-t interval of mean(d) (d: paired differences, per test sample
    or per seed; NaNs dropped). Lying within +-margin is the two one-sided t-tests (TOST,
    Schuirmann 1987) at level alpha: each bound is one one-sided test. No spread (every d
    equal) gives the point itself; fewer than two values, NaN."""
    x = np.asarray(d, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    mean, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    half = float(stats.t.ppf(1 - alpha, df=len(x) - 1)) * se
    return mean - half, mean + half


def bootstrap_difference_interval(diffs: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The (1 - 2 alpha) percentile interval of paired bootstrap differences (both models on
    the same resamples): the TOST for a metric that is not a per-sample mean."""
    return percentile_interval(np.asarray(diffs, dtype=float), 1 - 2 * alpha)


def equivalence(interval: tuple[float, float], margin: float, higher_is_better: bool) -> tuple[bool | None, bool | None]:
    """(equivalent, non_inferior) of a model to the best from the (1 - 2 alpha) interval of
    (model - best): equivalent when the whole interval lies within +-margin (TOST at alpha);
    non-inferior when its bound on the bad side does (the one-sided test at alpha). None where
    the interval is unknown."""
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return None, None
    bad_side = low > -margin if higher_is_better else high < margin
    return bool(low > -margin and high < margin), bool(bad_side)

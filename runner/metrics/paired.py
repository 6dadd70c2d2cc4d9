"""Intervals and paired tests for any metric, on the same test samples (docs/metrics.md).

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
from scipy import stats as sps

RESAMPLES = 10_000  # bootstrap resamples and sign flips per test (a p-value resolves 1e-4)
SEED = 0  # fixed: the same report gives the same numbers
BLOCK = 2_000_000  # weights per block (rows x samples): bounds one block's memory to tens of MB


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


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 0.9 * len(values) or not len(v):
        return math.nan, math.nan
    return float(np.quantile(v, (1 - confidence) / 2)), float(np.quantile(v, (1 + confidence) / 2))


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


Z_POWER = float(sps.norm.ppf(0.8))


def mde_from_se(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided level-alpha test of a difference whose standard
    error is `se` detects with `power` (normal approximation: (z_1-a/2 + z_power) * se)."""
    if not math.isfinite(se):
        return math.nan
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)


@dataclass(frozen=True)
class Comparison:
    p: float  # two-sided, uncorrected
    mde: float  # one seed: smallest difference this test detects with 80 % power
    wins: int | None = None  # mcnemar: samples favouring the model / the reference
    losses: int | None = None

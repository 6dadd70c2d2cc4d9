"""Tuning curves: what n trials of a family's search are expected to give (docs/tuning.md).

Trials of a search are draws from its space. For a family with N finished trials:
- the expected best val score of n trials drawn without replacement is the U-statistic
  E_n = sum_j v_(j) C(j-1, n-1) / C(N, n) over the sorted scores (Tang et al. 2020), unbiased
  for the best of n i.i.d. draws; allentune's (j/N)^n - ((j-1)/N)^n weights (Dodge et al. 2019)
  draw with replacement and are biased low for n > 1;
- the expected TEST score of the val-selected best of n (what a user who tunes n trials gets)
  is the same sum over the test scores, ordered by val.
Bands and tests come from one joint bootstrap: trials are resampled within each family (the
same rows for families that searched the same points), test samples on the same indices for
every trial, and the val-selected trial is chosen again in each replicate.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln

MAX_POINTS = 256  # budgets n on a curve: every n up to this many trials, then a geometric grid


def budgets(trials: int) -> np.ndarray:
    """The n at which a curve of `trials` trials is evaluated (1-based)."""
    if trials <= MAX_POINTS:
        return np.arange(1, trials + 1)
    return np.unique(np.round(np.geomspace(1, trials, MAX_POINTS)).astype(int))


def best_of_n_weights(trials: int, ns: np.ndarray | None = None) -> np.ndarray:
    """[len(ns), trials]: row n, column j = P(the j-th worst of `trials` is the best of a random
    n-subset) = C(j-1, n-1) / C(N, n), in logs (exact to rounding for thousands of trials)."""
    ns = budgets(trials) if ns is None else ns
    j = np.arange(1, trials + 1)[None, :]
    n = np.asarray(ns)[:, None]
    with np.errstate(invalid="ignore"):
        log_w = _log_comb(j - 1, n - 1) - _log_comb(np.full_like(n, trials), n)
    return np.where(j >= n, np.exp(log_w), 0.0)


def _log_comb(a, b):
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(np.maximum(a - b, 0) + 1)


def expected_best(values: np.ndarray, higher: bool, ns: np.ndarray | None = None) -> np.ndarray:
    """[..., len(ns)]: the expected best of n of the last axis' values (unbiased U-statistic)."""
    v = np.sort(values if higher else -values, axis=-1)
    out = v @ best_of_n_weights(values.shape[-1], ns).T
    return out if higher else -out


def expected_selected(goodness: np.ndarray, test: np.ndarray, ns: np.ndarray | None = None) -> np.ndarray:
    """[..., len(ns)]: the expected test score of the best-on-val of n trials; `goodness` orders
    the trials on val (higher = better, no ties: break them before, on val only)."""
    order = np.argsort(goodness, axis=-1, kind="stable")
    return np.take_along_axis(test, order, axis=-1) @ best_of_n_weights(test.shape[-1], ns).T


def goodness(val: np.ndarray, tiebreak: np.ndarray, higher: bool) -> np.ndarray:
    """A strict val order per row of [..., N]: the val score in its direction, ties broken by
    val loss (lower first), then by trial order (earlier first). Never reads test."""
    primary = val if higher else -val
    keys = (-np.arange(val.shape[-1]) * np.ones_like(val), -tiebreak, primary)  # last key sorts first
    ranks = np.empty(val.shape, dtype=np.float64)
    for index in np.ndindex(val.shape[:-1]):
        order = np.lexsort(tuple(k[index] for k in keys))
        ranks[index + (order,)] = np.arange(val.shape[-1])
    return ranks


def trial_resamples(trials: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, trials] indices: trials drawn with replacement. Families that searched the
    same points pass the same seed and get the same rows (paired by point)."""
    return np.random.default_rng(seed).integers(0, trials, size=(resamples, trials))


def crossovers(curves: dict[str, np.ndarray], ns: np.ndarray, higher: bool) -> list[tuple[int, str, str]]:
    """(n, new leader, previous leader) wherever the family leading the expected test score
    changes, over the budgets every family reached."""
    names = list(curves)
    stacked = np.stack([curves[f] for f in names])
    leaders = stacked.argmax(axis=0) if higher else stacked.argmin(axis=0)
    return [(int(ns[i]), names[leaders[i]], names[leaders[i - 1]]) for i in range(1, len(ns)) if leaders[i] != leaders[i - 1]]


def trials_to_reach(curve: np.ndarray, ns: np.ndarray, target: float, higher: bool) -> int | None:
    """The smallest budget whose expected score reaches `target`, or None within the trials."""
    hit = curve >= target if higher else curve <= target
    return int(ns[np.argmax(hit)]) if hit.any() else None

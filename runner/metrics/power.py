"""How much evidence a verdict has (docs/verdict.md): the power of the paired tests of
runner/metrics/significance.py, the minimum detectable effect (MDE) and the seeds a paired
t-test over seeds needs. Pure functions: numbers in, numbers out."""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from compare.metrics.significance import ALPHA

POWER = 0.80  # the power the minimum detectable effect and seeds_needed are stated at


def mde_from_se(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided level-alpha test of a difference whose standard
    error is `se` detects with `power` (normal approximation: (z_1-a/2 + z_power) * se)."""
    if not math.isfinite(se):
        return math.nan
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


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


def seed_resolution(diffs: np.ndarray) -> tuple[float, float]:
    """(mde, seeds needed) from per-seed differences (two or more): the paired t-test over
    seeds with their observed spread."""
    sd = float(np.std(diffs, ddof=1))
    return mde_over_seeds(sd, len(diffs)), seeds_needed(float(diffs.mean()), sd)

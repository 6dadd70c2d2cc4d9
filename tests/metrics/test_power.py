"""runner/metrics/power.py: each estimate of how much evidence a verdict has, against a
simulation of the very test it speaks for."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from compare.metrics import power, significance


# ---------------------------------------------------------------- how much evidence a verdict has
# Each estimate is checked against a simulation of the very test it speaks for: paired
# Bernoulli outcomes with a known difference, tested many times (fixed seeds).

SIMULATIONS = 2000  # binomial standard error of an empirical power near 0.8: 0.9 points


def simulated_mcnemar_power(n: int, p_discordant: float, delta: float, rng) -> float:
    """Share of simulated test sets on which the exact McNemar test rejects at 0.05."""
    shares = [(p_discordant + delta) / 2, (p_discordant - delta) / 2, 1 - p_discordant]  # only A right, only B right, agree
    counts = rng.multinomial(n, shares, size=SIMULATIONS)
    return float(np.mean([significance.mcnemar_exact(int(b), int(c)) < 0.05 for b, c, _ in counts]))


@pytest.mark.parametrize("n, p_discordant", [(450, 0.06), (2000, 0.15), (10000, 0.03)])
def test_the_one_seed_mde_is_the_difference_mcnemar_detects_80_percent_of_the_time(n, p_discordant):
    mde = power.mde_mcnemar(n, p_discordant)
    assert 0 < mde < p_discordant
    assert power.mcnemar_power(n, p_discordant, mde) == pytest.approx(0.8, abs=0.01)
    empirical = simulated_mcnemar_power(n, p_discordant, mde, np.random.default_rng(n))
    assert empirical == pytest.approx(0.8, abs=0.03)
    # Half the MDE is detected far less often: the MDE is a threshold, not a formality.
    assert simulated_mcnemar_power(n, p_discordant, mde / 2, np.random.default_rng(1)) < 0.5


def test_too_few_discordant_pairs_resolve_nothing():
    assert power.mde_mcnemar(40, 0.05) == math.inf  # 2 discordant pairs: never p < 0.05
    assert power.mde_mcnemar(450, 0.0) == math.inf


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
    needed = int(power.seeds_needed(p_a - p_b, sd))
    assert 5 <= needed <= 40
    assert simulated_seed_power(needed, p_a, p_b, n_test, np.random.default_rng(0)) == pytest.approx(power.paired_t_power(needed, (p_a - p_b) / sd), abs=0.03)
    assert simulated_seed_power(needed, p_a, p_b, n_test, np.random.default_rng(1)) >= 0.77
    assert simulated_seed_power(max(2, needed // 2), p_a, p_b, n_test, np.random.default_rng(2)) < 0.7
    assert power.seeds_needed(0.0, sd) == math.inf and math.isnan(power.seeds_needed(math.nan, sd))


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_the_seed_mde_is_detected_80_percent_of_the_time(seeds):
    n_test, mde = 1000, 0.0
    for _ in range(3):  # accuracies 0.5 -+ mde/2: the per-seed spread, and with it the MDE, settle
        sd = math.sqrt(2 * (0.25 - mde**2 / 4) / n_test)
        mde = power.mde_over_seeds(sd, seeds)
    empirical = simulated_seed_power(seeds, 0.5 + mde / 2, 0.5 - mde / 2, n_test, np.random.default_rng(seeds))
    assert empirical == pytest.approx(0.8, abs=0.03)
    assert power.mde_over_seeds(sd, 2) > 3 * power.mde_over_seeds(sd, 3)  # t(0.975, 1) = 12.7
    assert significance.t_quantile_note(2).startswith("2 seeds: t(0.975,1) = 12.7")

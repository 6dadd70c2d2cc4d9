"""The tuning estimators and the family verdict's test, checked against closed forms,
exhaustive enumeration and simulation (docs/tuning.md quotes the figures: `pytest -s`)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from compare.config import search
from compare.metrics import significance
from compare.report import families, tuning
from compare.metrics.significance import ALPHA

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_expected_best_is_the_mean_over_every_subset_in_both_directions():
    values = np.random.default_rng(0).random(7)
    for n in range(1, 8):
        subsets = list(itertools.combinations(values, n))
        assert tuning.expected_best(values, True)[n - 1] == pytest.approx(np.mean([max(s) for s in subsets]), rel=1e-12)
        assert tuning.expected_best(values, False)[n - 1] == pytest.approx(np.mean([min(s) for s in subsets]), rel=1e-12)


def test_expected_selected_is_the_mean_test_score_of_each_subsets_val_choice():
    rng = np.random.default_rng(1)
    val, test = rng.random(6), rng.random(6)
    order = tuning.goodness(val, np.zeros(6), higher=True)
    for n in range(1, 7):
        subsets = [list(s) for s in itertools.combinations(range(6), n)]
        want = np.mean([test[s][np.argmax(val[s])] for s in subsets])
        assert tuning.expected_selected(order, test)[n - 1] == pytest.approx(want, rel=1e-12)


def test_the_val_order_breaks_ties_on_val_loss_then_trial_order_and_never_on_test():
    val = np.array([0.9, 0.9, 0.8, 0.9])
    loss = np.array([0.3, 0.2, 0.1, 0.2])
    order = tuning.goodness(val, loss, higher=True)
    assert list(np.argsort(-order)) == [1, 3, 0, 2]  # 0.9 with loss 0.2 (first of two), then 0.9/0.3, then 0.8
    lower = tuning.goodness(np.array([1.0, 0.5]), np.zeros(2), higher=False)  # mae: lower is better
    assert lower[1] > lower[0]


def test_the_u_statistic_is_unbiased_where_allentunes_estimator_is_not():
    """Uniform(0, 1) scores: the best of n i.i.d. draws has mean n / (n + 1). Averaged over
    4,000 samples of N = 10 trials, the U-statistic meets it at every n; the with-replacement
    estimator of Dodge et al. 2019 falls short for n > 1."""
    rng = np.random.default_rng(2)
    N, reps = 10, 4000
    samples = rng.random((reps, N))
    u = tuning.expected_best(samples, True).mean(axis=0)
    v = np.sort(samples, axis=1)
    j = np.arange(1, N + 1)
    dodge = np.array([(v * ((j / N) ** n - ((j - 1) / N) ** n)).sum(axis=1).mean() for n in range(1, N + 1)])
    truth = np.arange(1, N + 1) / (np.arange(1, N + 1) + 1)
    se = samples.max(axis=1).std() / math.sqrt(reps)  # the largest sampling error of any n
    assert np.all(np.abs(u - truth) < 4 * se), (u, truth)
    assert np.all(dodge[1:] < truth[1:] - 4 * se), (dodge, truth)
    print(f"\nbias at n = 5 of N = 10: U-statistic {u[4] - truth[4]:+.4f}, allentune {dodge[4] - truth[4]:+.4f}")


def test_weights_hold_for_thousands_of_trials():
    w = tuning.best_of_n_weights(5000, np.array([1, 2, 100, 5000]))
    assert np.allclose(w.sum(axis=1), 1.0)
    assert w[-1, -1] == pytest.approx(1.0) and w[0, 0] == pytest.approx(1 / 5000)
    assert len(tuning.budgets(5000)) <= tuning.MAX_POINTS and tuning.budgets(5000)[-1] == 5000


def test_crossovers_and_trials_to_reach():
    ns = np.arange(1, 6)
    curves = {"a": np.array([0.5, 0.6, 0.65, 0.66, 0.67]), "b": np.array([0.4, 0.55, 0.66, 0.70, 0.72])}
    assert tuning.crossovers(curves, ns, higher=True) == [(3, "b", "a")]
    assert tuning.trials_to_reach(curves["b"], ns, 0.7, higher=True) == 4
    assert tuning.trials_to_reach(curves["a"], ns, 0.7, higher=True) is None


def test_search_points_are_seeded_shared_by_space_and_inside_their_ranges():
    space = {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "args.width": {"int": [8, 64]}, "args.act": {"choice": ["relu", "gelu"]}, "m": {"uniform": [0.5, 0.99]}}
    for sampler in search.SAMPLERS:
        spec = {"sampler": sampler, "trials": 16, "seed": 3, "space": space}
        points = search.sample(spec)
        assert points == search.sample(dict(spec)) and points != search.sample(spec | {"seed": 4})
        assert all(1e-4 <= p["optimizer.lr"] <= 1e-1 and 8 <= p["args.width"] <= 64 and p["args.act"] in ("relu", "gelu") and 0.5 <= p["m"] <= 0.99 for p in points)
        assert all(float(f"{p['optimizer.lr']:.3g}") == p["optimizer.lr"] for p in points)  # the name shows the value trained
    lrs = np.log10([p["optimizer.lr"] for p in search.sample({"sampler": "sobol", "trials": 64, "seed": 0, "space": space})])
    assert np.histogram(lrs, bins=4, range=(-4, -1))[0].tolist() == [16, 16, 16, 16]  # Sobol: balanced in each decade


# ---------------------------------------------------------------- the family verdict's test, simulated

def _family(name: str, rng, accuracies: np.ndarray, n_val: int, correct_test: np.ndarray, points: str) -> families.Family:
    val = rng.binomial(n_val, accuracies) / n_val
    return families.Family(name, [f"{name}{i}" for i in range(len(accuracies))], len(accuracies), val[None], tuning.goodness(val[None], np.zeros((1, len(val))), True),
                           correct_test.mean(axis=1)[None], np.ones(len(accuracies)), points)


def _test_correctness(rng, accuracies: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """[trials, samples] 0/1: each trial right with its accuracy, correlated over trials through
    each test sample's shared difficulty (a paired test set)."""
    z = 0.5 * shared + 0.5 * rng.random((len(accuracies), len(shared)))
    cdf = np.where(z < 0.5, 2 * z * z, 1 - 2 * (1 - z) ** 2)  # (U + V) / 2 is triangular: back to uniform
    return (cdf < accuracies[:, None]).astype(float)


def simulate(repeats: int, spread: float, shift: float, shared_points: bool, seed: int, trials: int = 8, n_val: int = 300, n_test: int = 500, resamples: int = 400) -> float:
    """Share of repeats in which the family verdict finds B different from A (Holm p < alpha)."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for r in range(repeats):
        base = np.clip(rng.normal(0.85, spread, trials), 0.5, 0.99)
        acc_a = base if shared_points else np.clip(rng.normal(0.85, spread, trials), 0.5, 0.99)
        acc_b = np.clip((base if shared_points else rng.normal(0.85, spread, trials)) - shift, 0.5, 0.99)
        difficulty = rng.random(n_test)
        correct = {"A": _test_correctness(rng, acc_a, difficulty), "B": _test_correctness(rng, acc_b, difficulty)}
        fams = [_family(n, rng, a, n_val, correct[n], "space" if shared_points else n) for n, a in (("A", acc_a), ("B", acc_b))]
        w = next(significance.resample_blocks(n_test, resamples, seed=r))  # the same test resamples for every trial
        test_b = {f.name: ((w @ correct[f.name].T) / n_test)[:, None, :] for f in fams}
        table, _, _ = families.judge(fams, test_b, higher=True)
        rejected += bool((table["p_vs_best"] < ALPHA).any())
    return rejected / repeats


@pytest.mark.parametrize("spread,shared", [(0.03, False), (0.03, True), (0.0, False)])
def test_a_a_families_are_rejected_at_most_alpha(spread, shared):
    repeats = 200
    rate = simulate(repeats, spread, 0.0, shared, seed=11)
    ceiling = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / repeats)
    print(f"\nA/A, trial spread {spread}, {'shared' if shared else 'independent'} points: rejected {rate:.3f} of {repeats} (ceiling {ceiling:.3f})")
    assert rate <= ceiling


def test_a_b_families_with_a_real_gap_are_found():
    """The joint bootstrap is conservative (it counts the test noise of the chosen trials twice:
    once through the trials resampled, once through the samples), so it needs a clear gap."""
    rate = simulate(100, 0.01, 0.06, True, seed=12)
    print(f"\nA/B, gap 0.06, spread 0.01, shared points, 500 test samples: power {rate:.2f}")
    assert rate >= 0.5

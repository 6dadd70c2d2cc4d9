"""Racing (`experiment.race`, docs/racing.md): stop paying for models the val split has already
shown to be worse, in the F-Race spirit (Birattari et al. 2002), with the family-wise error
controlled over every pair and every planned look.

At each look (after epoch `min_epochs`, then every `every` epochs) every pair of live models is
compared on their val statistics of that epoch by the paired test of the race's metric
(`experiment.race.metric`, docs/metrics.md): exact McNemar for val_acc and other per-sample 0/1
metrics, the sign-flip test for per-sample means, the paired bootstrap for the rest. The p-values
of all k(k-1)/2 pairs are Holm-corrected, at level alpha / L for L planned looks (Bonferroni
spending over the looks). A model is eliminated when some other model is significantly better
than it. Testing all pairs, not just "the best against the rest", is what keeps the error
rate honest: the best is chosen on the same val predictions it is tested on.

Only val is read; the eliminated model's own random stream and weights are left as they are,
and the other models never see the decision (their streams are their own).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from compare.metrics.builtin import Kept, Metric
from compare.metrics.significance import bootstrap, bootstrap_p, holm, mcnemar_exact, sign_flip_p


@dataclass(frozen=True)
class Elimination:
    model: str
    by: str  # the model significantly better than it (the best such)
    p: float  # Holm-corrected p of that pair, within the look


def looks(epochs: int, min_epochs: int, every: int) -> list[int]:
    """The planned looks: the epochs after which the race tests (not after the last one: a
    model that has finished saves nothing by stopping)."""
    return list(range(min_epochs, epochs, every))


def decide(correct: dict[str, np.ndarray], level: float) -> list[Elimination]:
    """Which models to eliminate at one look, from each live model's val correctness (bool
    arrays over the same samples): those some other model beats with Holm-corrected p < level."""
    names = list(correct)
    pairs = list(itertools.combinations(names, 2))
    wins = np.array([np.sum(correct[a] & ~correct[b]) for a, b in pairs])
    losses = np.array([np.sum(~correct[a] & correct[b]) for a, b in pairs])
    adjusted = holm(mcnemar_exact(wins, losses))
    accuracy = {n: float(np.mean(c)) for n, c in correct.items()}
    beaten: dict[str, Elimination] = {}
    for (a, b), p in zip(pairs, adjusted):
        if not p < level or accuracy[a] == accuracy[b]:
            continue
        better, worse = (a, b) if accuracy[a] > accuracy[b] else (b, a)
        current = beaten.get(worse)
        if current is None or accuracy[better] > accuracy[current.by]:
            beaten[worse] = Elimination(worse, better, float(p))
    return [beaten[n] for n in names if n in beaten]


def decide_on(kept: dict[str, Kept], metric: Metric, level: float) -> list[Elimination]:
    """`decide` for any metric: each pair of live models by the metric's own paired test on
    the same val samples, Holm over every pair, the better side by the metric's direction."""
    if metric.family == "mcnemar":
        return decide({n: metric.per_sample(k) > 0.5 for n, k in kept.items()}, level)
    names = list(kept)
    value = {n: metric.value(k) for n, k in kept.items()}
    pairs = list(itertools.combinations(names, 2))
    if metric.family in ("additive", "dense"):  # dense: each image's own value (metric.paired)
        each = metric.paired or metric.per_sample
        raw = [sign_flip_p(each(kept[a]) - each(kept[b])) for a, b in pairs]
    else:
        n = len(next(iter(kept.values())))
        boot = dict(zip(names, bootstrap([metric.resampler(kept[m]) for m in names], n)))
        raw = [bootstrap_p(value[a] - value[b], boot[a] - boot[b]) for a, b in pairs]
    adjusted = holm(raw)
    key = (lambda m: value[m]) if metric.higher else (lambda m: -value[m])
    beaten: dict[str, Elimination] = {}
    for (a, b), p in zip(pairs, adjusted):
        if not p < level or value[a] == value[b]:
            continue
        better, worse = (a, b) if key(a) > key(b) else (b, a)
        current = beaten.get(worse)
        if current is None or key(better) > key(current.by):
            beaten[worse] = Elimination(worse, better, float(p))
    return [beaten[n] for n in names if n in beaten]


class Race:
    def __init__(self, alpha: float, min_epochs: int, every: int, epochs: int):
        self.planned = looks(epochs, min_epochs, every)
        self.level = alpha / len(self.planned) if self.planned else 0.0  # Bonferroni over the looks

    def look_on(self, epoch: int, kept: dict[str, Kept], metric: Metric) -> list[Elimination]:
        """At a planned look with two or more live models: the eliminations, from each live
        model's kept val statistics, by the race metric's own test."""
        if epoch not in self.planned or len(kept) < 2:
            return []
        return decide_on(kept, metric, self.level)


def describe(e: Elimination) -> str:
    """What the history's `eliminated_by` cell says."""
    p = "<1e-6" if e.p < 1e-6 else f"{e.p:.2g}" if math.isfinite(e.p) else "nan"
    return f"{e.by} (Holm p {p})"

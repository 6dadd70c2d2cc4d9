"""The verdict for any metric (docs/metrics.md): per model, the metric's value per seed from
the kept per-sample statistics, its 95% interval, and a paired test against the best model
in the metric's own family, with the MDE that evidence resolves.

- "mcnemar" (a per-sample 0/1: acc, top-k, subset accuracy): the exact sign test per sample,
  seeds combined per sample (significance.paired_over_seeds; exact McNemar with one seed);
  Wilson; the per-seed McNemar counts.
- "additive" (a per-sample mean: mse, mae, nll, brier, hamming): the paired sign-flip
  permutation test on the per-sample differences (seeds summed per sample); percentile bootstrap.
- "bootstrap" (F1, balanced accuracy, R², AUROC, AP, ECE): the paired bootstrap, every model
  on the SAME resamples; percentile bootstrap interval.
- "dense" (pixel accuracy: correct over counted pixels, pooled over images): the paired sign-flip
  test on each image's own accuracy; the interval and MDE from the paired bootstrap of the ratio.
With several seeds the interval is Student-t over the per-seed values and the MDE and seeds
needed come from the per-seed differences (power.seed_resolution). The tests themselves:
runner/metrics/significance.py and runner/metrics/power.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from compare.errors import ReportError
from compare.metrics import power, significance
from compare.metrics.builtin import HEADLINE, Kept, Metric, metrics_for, split_column
from compare.report.run_data import RunData, epoch_stats

FAMILY_TEST = {
    "mcnemar": "exact McNemar test (per test sample, the seeds each model gets right; exact sign test where they differ)",
    "additive": f"paired sign-flip permutation test on the per-sample differences ({significance.RESAMPLES:,} flips, p = (c+1)/(B+1))",
    "bootstrap": f"paired bootstrap, every model on the same {significance.RESAMPLES:,} resamples of the test samples (p = (c+1)/(B+1))",
    "dense": f"paired sign-flip permutation test on the per-image differences ({significance.RESAMPLES:,} flips, p = (c+1)/(B+1))",
}
FAMILY_INTERVAL = {
    "additive": f"percentile bootstrap 95% interval over the test samples ({significance.RESAMPLES:,} resamples; one seed)",
    "bootstrap": f"percentile bootstrap 95% interval over the test samples ({significance.RESAMPLES:,} resamples; one seed)",
    "dense": f"percentile bootstrap 95% interval over the test images ({significance.RESAMPLES:,} resamples; one seed)",
}
HEADLINE_TEST = "exact McNemar test on top-1 correctness"  # accuracy's test, worded at length in leaderboard.md


def described_test(metric: Metric) -> str:
    """The paired test behind p_vs_best, in words."""
    return HEADLINE_TEST if metric.name == HEADLINE else FAMILY_TEST[metric.family] + f" on {metric.name}"


def registered(run: RunData, metric: str) -> Metric | None:
    """The metric behind a test_<m> column of this run's task (built in, or the run's own by
    reference, resolved where the run resolved it), or None."""
    if not metric.startswith("test_"):
        return None
    name = metric.removeprefix("test_")
    found = metrics_for(*run.task).get(name)
    reference = run.env.get("user_metrics", {}).get(name)
    if found is None and reference:
        from compare.resolve.metric_refs import resolve_metric  # noqa: PLC0415 - user code, loaded only when asked for

        found = resolve_metric(reference, run.env.get("references_from", "."))
    return found


def kept(run: RunData, model: str, seed: int, key: str, metric: Metric) -> Kept | None:
    """What the run saved for (model, seed) at the `key` epoch ("final" or "best_val"), if it
    holds every statistic the metric needs."""
    pred = run.predictions.get(model, {}).get(seed)
    if pred is None:
        return None
    stats_ = epoch_stats(pred, key)
    if not all(n in stats_ for n in metric.needs):
        return None
    return Kept(stats_, pred["target"], run.task[1])


def column(run: RunData, metric: str) -> str:
    """A metric as its history.csv column: `macro_f1` -> test_macro_f1 (a column name stays)."""
    if metric in run.history or metric.startswith(("test_", "val_", "train_")):
        return metric
    return f"test_{metric}" if f"test_{metric}" in run.history or metric in metrics_for(*run.task) else metric


def filled(run: RunData, metric: str, found: Metric, key: str) -> pd.DataFrame:
    """The history with the metric's value on each selected row computed from the kept
    statistics where history.csv has no such column (a metric asked for after the run)."""
    h = run.history
    if metric in h and h.loc[h["_selected"], metric].notna().all():
        return h
    h = h.copy()
    if metric not in h:
        h[metric] = math.nan
    for i in h.index[h["_selected"]]:
        k = kept(run, h.at[i, "model"], int(h.at[i, "seed"]), key, found)
        if k is None:
            raise ReportError(
                f"{run.path}: --metric {found.name}: the run kept no {', '.join(found.needs)} for {h.at[i, 'model']} "
                f"(set [report] metrics = [\"{found.name}\"] before the run to keep them)"
            )
        h.at[i, metric] = found.value(k)
    return h


def imbalanced(share: float, classes: int) -> bool:
    """The largest class holds twice its balanced share 1/C (binary: 75 %), and at least 10 % of
    the test set (with many small classes, a class twice its share is sampling noise)."""
    return share >= max(min(2 / classes, 0.75), 0.1)


def base_rate(run: RunData, table: pd.DataFrame) -> str | None:
    """Accuracy ranked on an imbalanced test set: what always predicting the majority class
    scores, and which models do not beat it."""
    target = next((p["target"] for seeds in run.predictions.values() for p in seeds.values()), None)
    if target is None or run.task[0] != "classification" or target.ndim != 1:
        return None
    counts = np.bincount(target.astype(np.int64))
    share, classes = counts.max() / counts.sum(), max(len(run.classes), int((counts > 0).sum()), 2)
    if not imbalanced(share, classes):
        return None
    name = run.classes[int(counts.argmax())] if int(counts.argmax()) < len(run.classes) else str(int(counts.argmax()))
    below = [m for m, v in zip(table["model"], table[f"{split_column('test')}_mean"]) if v <= share]
    return (f"imbalanced test set: always predicting {name!r} scores accuracy {share:.4f} (the base rate)"
            + (f"; {', '.join(below)} do(es) not beat it" if below else "")
            + "; rank by macro_f1 or balanced_acc ([report] rank_by, or --metric) for a verdict over every class")


@dataclass
class Verdict:
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # model -> seed -> value
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # one seed, non-proportion metrics
    p: dict[str, float] = field(default_factory=dict)
    mde: dict[str, float] = field(default_factory=dict)
    needed: dict[str, float] = field(default_factory=dict)
    wins: dict[str, int] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    diff: dict[str, tuple[float, float]] = field(default_factory=dict)  # (1 - 2 alpha) interval of (model - best): the TOST's
    per_seed: list[dict] = field(default_factory=list)  # mcnemar: each seed's discordant counts and exact McNemar p
    notes: list[str] = field(default_factory=list)


def judge(run: RunData, metric: Metric, models: list[str], reference: str | None, key: str) -> Verdict:
    out = Verdict()
    data = {m: {s: k for s in run.predictions.get(m, {}) if (k := kept(run, m, s, key, metric)) is not None} for m in models}
    missing = [m for m in models if not data[m]]
    if missing:
        out.notes.append(f"no saved per-sample statistics for {metric.name} ({', '.join(metric.needs)}) at the {key} epoch for {', '.join(missing)}: no interval or paired test for them")
    out.values = {m: {s: metric.value(k) for s, k in d.items()} for m, d in data.items()}
    n = next((len(k) for d in data.values() for k in d.values()), 0)
    one_seed = {m for m, d in data.items() if len(d) == 1}
    boot = metric.family != "mcnemar" and n > 0
    if boot:
        names = [m for m in models if data[m]]
        resamplers = [_seed_mean([metric.resampler(k) for k in data[m].values()]) for m in names]
        values = dict(zip(names, significance.bootstrap(resamplers, n)))
        out.intervals = {m: significance.percentile_interval(values[m]) for m in names if m in one_seed}
    ref = data.get(reference) if reference is not None else None
    if not ref:
        return out
    for m in models:
        if m == reference or not data[m]:
            continue
        pairs = significance.pair_seeds(data[m], ref)
        if not all(np.array_equal(data[m][s].target, ref[r].target) for s, r in pairs):
            out.notes.append(f"{m}: test targets differ from {reference}'s: not paired")
            continue
        if metric.family == "mcnemar":
            a = np.stack([metric.per_sample(data[m][s]) > 0.5 for s, _ in pairs])
            b = np.stack([metric.per_sample(ref[r]) > 0.5 for _, r in pairs])
            result = significance.paired_over_seeds(a, b)
            out.p[m], out.wins[m], out.losses[m] = result.p, result.wins, result.losses
            for (s, _), mine, best in zip(pairs, a, b):
                only_mine, only_best = significance.discordant(mine, best)
                out.per_seed.append({"model": m, "seed": s, "only_model_right": only_mine, "only_best_right": only_best,
                                     "p_mcnemar": significance.mcnemar_exact(only_mine, only_best)})
            single = power.mde_mcnemar(n, float(np.mean(a[0] != b[0]))) if len(pairs) == 1 else math.nan
            out.diff[m] = significance.difference_interval(a[0].astype(float) - b[0])  # one seed; several: over seeds, below
        elif metric.family == "additive":
            d = sum(metric.per_sample(data[m][s]) - metric.per_sample(ref[r]) for s, r in pairs)
            out.p[m] = significance.sign_flip_p(d)
            out.diff[m] = significance.bootstrap_difference_interval(values[m] - values[reference])  # rmse too: on the same resamples
            single = power.mde_from_se(float(np.std(d, ddof=1)) / math.sqrt(len(d))) if len(pairs) == 1 and len(d) > 1 else math.nan
            if metric.finish is not None:  # rmse: from mse units by the delta method, d sqrt(x) = dx / (2 sqrt(x))
                single /= 2 * out.values[reference][pairs[0][1]]
        elif metric.family == "dense":  # a pooled ratio: its test pairs each image's own value, its MDE the ratio's bootstrap
            d = sum(metric.paired(data[m][s]) - metric.paired(ref[r]) for s, r in pairs)
            out.p[m] = significance.sign_flip_p(d)
            delta = values[m] - values[reference]
            out.diff[m] = significance.bootstrap_difference_interval(delta)
            single = power.mde_from_se(float(np.nanstd(delta, ddof=1))) if len(pairs) == 1 else math.nan
        else:
            delta = values[m] - values[reference]
            observed = float(np.mean([out.values[m][s] for s, _ in pairs]) - np.mean([out.values[reference][r] for _, r in pairs]))
            out.p[m] = significance.bootstrap_p(observed, delta)
            out.diff[m] = significance.bootstrap_difference_interval(delta)
            single = power.mde_from_se(float(np.nanstd(delta, ddof=1))) if len(pairs) == 1 else math.nan
        if len(pairs) == 1:
            out.mde[m], out.needed[m] = single, math.nan
        else:
            per_seed = np.array([out.values[m][s] - out.values[reference][r] for s, r in pairs])
            out.mde[m], out.needed[m] = power.seed_resolution(per_seed)
            out.diff[m] = significance.difference_interval(per_seed)  # training randomness, as the t-interval over seeds
    return out


def _seed_mean(resamplers):
    """A model's metric under the resample weights, averaged over its seeds (same test samples)."""
    if len(resamplers) == 1:
        return resamplers[0]
    return lambda w: np.mean([r(w) for r in resamplers], axis=0)


def margin_of(run: RunData, margin: float | None) -> float | None:
    """`margin` (--margin), else the run's [report] margin; None: no equivalence columns."""
    margin = margin if margin is not None else run.config.get("report", {}).get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin <= 0:
        raise ReportError(f"--margin {margin!r}: expected a positive number in the ranked metric's units (0.01 = one point of accuracy)")
    return float(margin)


def equivalence_columns(table: pd.DataFrame, evidence, intervals: list[tuple[float, float]]) -> None:
    """equivalent_to_best, non_inferior and the (1 - 2 alpha) interval of (model - best) they
    read (significance.equivalence, at evidence.margin); the best's own cells stay empty."""
    verdicts = [significance.equivalence(iv, evidence.margin, evidence.higher_is_better) for iv in intervals]
    if evidence.reference is not None and len(table):
        verdicts[0], intervals[0] = (None, None), (math.nan, math.nan)
    table["diff_vs_best_ci90_low"], table["diff_vs_best_ci90_high"] = [iv[0] for iv in intervals], [iv[1] for iv in intervals]
    for i, col in enumerate(("equivalent_to_best", "non_inferior")):
        table[col] = pd.array([pd.NA if v[i] is None else v[i] for v in verdicts], dtype="boolean")

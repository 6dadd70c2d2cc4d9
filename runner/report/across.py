"""Verdicts across datasets (Demšar 2006, JMLR 7: "Statistical comparisons of classifiers over
multiple data sets"): one run per dataset, the models they share ranked on each dataset, then
tests on the ranks. docs/across-datasets.md says what each number assumes.

    the table       models x datasets of the headline metric (leaderboard.build per run)
    average rank    per dataset rank 1 = best, ties share the average rank; mean over datasets
    Friedman        scipy.stats.friedmanchisquare on the scores (from 3 datasets and 3 models),
                    with the Iman-Davenport F form Demšar recommends (less conservative)
    Nemenyi CD      q_alpha / sqrt(2) * sqrt(k (k + 1) / (6 N)), q_alpha from the studentized range
    Wilcoxon        signed-rank test of every model against the best over datasets, Holm-corrected

A dataset is a run's `[data]` table without the loader knobs (batch sizes, workers, caches).
Every run must have the ranked metric; where the runs' tasks or losses differ, a note says so,
and a loss that differs between runs is ranked within each dataset but not Wilcoxon-tested.
Pure statistics first; `build` reads the runs (no file is written here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sp

from compare.errors import ReportError
from compare.metrics.builtin import higher_is_better, split_column
from compare.metrics.significance import ALPHA, difference_interval, equivalence, holm
from compare.report.leaderboard import build as leaderboard_build
from compare.report.run_data import RunData, data_settings, describe_data, differences, differences_line, run_labels, task_words
from compare.report.verdict import column as metric_column, registered


# ---- statistics: arrays in, numbers out ------------------------------------------------------

def rank_matrix(scores, higher_is_better: bool = True) -> np.ndarray:
    """(datasets, models) scores -> ranks per dataset: 1 = best, ties get the average rank."""
    x = np.asarray(scores, dtype=float)
    return sp.rankdata(-x if higher_is_better else x, axis=1)


@dataclass(frozen=True)
class Friedman:
    chi2: float  # Friedman's chi-square, tie-corrected (as scipy and R's friedman.test compute it)
    p: float  # chi-square with k - 1 degrees of freedom
    f: float  # Iman-Davenport F_F = (N - 1) chi2 / (N (k - 1) - chi2)
    f_p: float  # F with (k - 1, (k - 1)(N - 1)) degrees of freedom
    datasets: int
    models: int


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, float]:
    """Iman and Davenport's F form of Friedman's statistic, and its p-value. chi2 at its
    maximum N (k - 1) (every dataset ranks the models the same way) is F = inf, p = 0."""
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-12:
        return math.inf, 0.0
    f = (n - 1) * chi2 / denominator
    return float(f), float(sp.f.sf(f, k - 1, (k - 1) * (n - 1)))


def friedman(scores) -> Friedman:
    """Friedman test on (datasets, models) scores (needs N >= 2 datasets, k >= 3 models; the
    callers ask for N >= 3). Every dataset tied throughout is no evidence: chi2 = 0, p = 1."""
    x = np.asarray(scores, dtype=float)
    n, k = x.shape
    if all(len(np.unique(row)) == 1 for row in x):
        chi2, p = 0.0, 1.0  # scipy divides by a zero tie correction here
    else:
        result = sp.friedmanchisquare(*x.T)
        chi2, p = float(result.statistic), float(result.pvalue)
    f, f_p = iman_davenport(chi2, n, k)
    return Friedman(chi2, p, f, f_p, n, k)


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """Demšar's q_alpha: the studentized range quantile (k groups, infinite df) over sqrt(2)."""
    return float(sp.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi: two average ranks differing by at least CD differ significantly."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def wilcoxon_p(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p of paired scores over datasets; zero differences are
    split between the signs (Demšar's choice); all differences zero is p = 1."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(d):
        return 1.0
    return float(sp.wilcoxon(d, zero_method="zsplit").pvalue)


def groups(avg_ranks, cd: float) -> list[list[int]]:
    """Maximal runs of models (indices, best rank first) whose average ranks differ by less
    than CD: the bars of the CD diagram. Singletons and runs inside a longer one are dropped."""
    r = np.asarray(avg_ranks, dtype=float)
    order = list(np.argsort(r, kind="stable"))
    spans = []
    for i, start in enumerate(order):
        end = i
        while end + 1 < len(order) and r[order[end + 1]] - r[start] < cd:
            end += 1
        if end > i and (not spans or end > spans[-1][1]):
            spans.append((i, end))
    return [[int(m) for m in order[a : b + 1]] for a, b in spans]


# ---- the across-datasets comparison of several runs -----------------------------------------

@dataclass
class Across:
    table: pd.DataFrame  # one row per model, best average rank first: scores, ranks, tests
    datasets: dict[str, str]  # run label -> what the dataset is ("digits, subset=300")
    metric: str
    higher_is_better: bool
    tested: list[str]  # models in every run with a finite score: the ones ranked and tested
    friedman: Friedman | None
    cd: float | None  # Nemenyi critical difference at `alpha`
    q: float | None
    alpha: float
    groups: list[list[str]]  # models joined by a bar: not significantly different (Nemenyi)
    verdict: str
    notes: list[str] = field(default_factory=list)
    wilcoxon: bool = True  # False: the metric is a different quantity per dataset (a loss that differs), p_vs_best not tested
    margin: float | None = None  # --margin / [report] margin: equivalence to the best over datasets (docs/verdict.md)


def dataset_identity(run: RunData) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in data_settings(run).items()))


def applies(runs: list[RunData]) -> bool:
    """Several runs on different data ([data] settings) that share a model name."""
    if len(runs) < 2 or len({dataset_identity(r) for r in runs}) == 1:
        return False
    names = [set(r.model_names) for r in runs]
    return any(names[i] & names[j] for i in range(len(names)) for j in range(i + 1, len(names)))


def _has(run: RunData, metric: str) -> bool:
    """Whether the run's leaderboard can rank by `metric`: a numeric history.csv column, or a
    metric of its task computed from the kept statistics."""
    column = metric_column(run, metric)
    return _numbers(run, column) or registered(run, column) is not None


def _numbers(run: RunData, column: str) -> bool:
    """A numeric history.csv column with a value (a regression run's test_acc column is empty)."""
    return column in run.history and pd.api.types.is_numeric_dtype(run.history[column]) and bool(run.history[column].notna().any())


def ranked_metric(runs: list[RunData], labels: list[str], metric: str | None) -> str:
    """`metric` (--metric), else the metric every run ranks by (its report.rank_by). Refused,
    naming each run: runs that rank by different metrics (different tasks, or rank_by) when no
    --metric is given; a metric that some run does not have."""
    columns = [[c for c in r.history.columns if c.startswith("test_") and _numbers(r, c)] for r in runs]
    shared = [c for c in columns[0] if all(c in cs for cs in columns[1:])]
    hint = f"pass --metric with one that every run has ({', '.join(shared)})" if shared else "no test metric is in every run: compare them one run at a time"
    if metric is None:
        own = [r.rank_by for r in runs]
        if len(set(own)) > 1:
            each = "; ".join(f"{label}: {m}, a {task_words(r)}" for label, m, r in zip(labels, own, runs))
            raise ReportError(f"the runs rank by different metrics ({each}): {hint}")
        metric, asked = own[0], "the runs' metric"
    else:
        asked = "--metric"
    lacking = [f"{label} (a {task_words(r)})" for label, r in zip(labels, runs) if not _has(r, metric)]
    if lacking:
        raise ReportError(f"{asked} {metric}: {', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no such metric, so the models cannot be ranked on every dataset: {hint}")
    return metric


def build(runs: list[RunData], metric: str | None = None, select: str | None = None, alpha: float = ALPHA, margin: float | None = None) -> Across:
    """The models x datasets comparison of runs that are each on a different dataset; the
    scores are each run's leaderboard headline (`<metric>_mean`, as `compare leaderboard RUN`;
    `metric` None: the one the runs rank by, for `compare leaderboard` and `compare plot` alike)."""
    labels = run_labels(runs)
    metric = ranked_metric(runs, labels, metric)
    identities = [dataset_identity(r) for r in runs]
    for i, ident in enumerate(identities):
        j = identities.index(ident)
        if j < i:
            raise ReportError(f"{labels[j]} and {labels[i]} are on the same data ([data] settings equal): give one run per dataset (repeat seeds with experiment.seeds)")
    boards = [leaderboard_build([run], metric, select, margin) for run in runs]
    metric = boards[0].evidence.metric  # a metric name (rmse) as its column (test_rmse), as the leaderboard reads it
    scores = pd.DataFrame({label: board.table.set_index("model")[f"{metric}_mean"] for label, board in zip(labels, boards)})
    names = list(dict.fromkeys(m for run in runs for m in run.model_names if m in scores.index))
    differ = differences(runs, data=False)  # the data differ by design: the "datasets" line names them
    sizes = not ("loss" in differ and metric.endswith("loss"))  # CE differences next to MSE differences mean nothing
    across = compare_scores(scores.reindex(names), dict(zip(labels, describe_data(runs))), metric, alpha, boards[0].evidence.higher_is_better, sizes, boards[0].evidence.margin)
    notes = [line] if (line := differences_line(labels, differ)) else []
    if not sizes:
        notes.append(f"{metric} is a different loss on each dataset: its ranks within each dataset stand (Friedman, Nemenyi), "
                     "but no Wilcoxon test against the best, which compares the sizes of differences across datasets")
    across.notes[:0] = notes
    return across


def compare_scores(scores: pd.DataFrame, datasets: dict[str, str], metric: str = split_column("test"), alpha: float = ALPHA,
                   higher: bool | None = None, sizes: bool = True, margin: float | None = None) -> Across:
    """`scores`: models (index, in display order) x datasets (columns), NaN where a model has
    no score; `datasets`: column -> description; `higher`: whether higher scores are better
    (default: the leaderboard's rule for `metric`); `sizes`: whether score differences are
    comparable across datasets (the Wilcoxon test needs it). Ranks and tests use the complete rows."""
    scores = scores.astype(float)
    hib = higher_is_better(metric, higher)
    names, labels = list(scores.index), list(scores.columns)
    complete = scores.notna().all(axis=1)
    tested = [m for m in names if complete[m]]
    notes = [f"{m}: no {metric} on {', '.join(map(str, scores.columns[scores.loc[m].isna()]))}: shown, left out of the ranks and tests" for m in names if not complete[m]]

    table = pd.DataFrame({"model": names})
    for label in labels:
        table[label] = scores[label].to_numpy()
    n, k = len(labels), len(tested)
    result = dict(friedman=None, cd=None, q=None, groups=[])
    avg = pd.Series(math.nan, index=names)
    p_raw = pd.Series(math.nan, index=names)
    if k >= 2:
        matrix = scores.loc[tested].to_numpy().T  # (datasets, models)
        ranks = rank_matrix(matrix, hib)
        for j, label in enumerate(labels):
            table[f"rank_{label}"] = pd.Series(ranks[j], index=tested).reindex(names).to_numpy()
        avg[tested] = ranks.mean(axis=0)
        best = tested[int(np.argmin(ranks.mean(axis=0)))]
        for m in tested:
            if m != best and sizes:
                p_raw[m] = wilcoxon_p(scores.loc[best], scores.loc[m])
        result["q"], result["cd"] = nemenyi_q(k, alpha), critical_difference(k, n, alpha)
        result["groups"] = [[tested[i] for i in g] for g in groups(avg[tested].to_numpy(), result["cd"])]
        if n >= 3 and k >= 3:
            result["friedman"] = friedman(matrix)
        else:
            notes.append(f"no Friedman test: it needs at least 3 datasets and 3 models (here {n} and {k})")
        smallest = 2 / 2**n  # the exact two-sided Wilcoxon p when every dataset favours one side
        if sizes and smallest * (k - 1) >= alpha:
            notes.append(f"with {n} datasets the two-sided Wilcoxon p is at least {smallest:.3g}, so Holm over {k - 1} comparison(s) cannot bring p vs best below {alpha:g}: more datasets are needed to show a difference that way")
    else:
        notes.append(f"{k} model(s) with {metric} on every dataset: nothing to rank")
    table["avg_rank"] = avg.to_numpy()
    table["p_vs_best"] = holm(p_raw.to_numpy())  # Holm over the k - 1 tests against the best
    table["p_vs_best_raw"] = p_raw.to_numpy()
    table["in_test"] = [m in tested for m in names]
    if margin is not None:  # TOST over datasets: the t-interval of the per-dataset differences to the best
        best_row = scores.loc[best] if k >= 2 and sizes else None
        intervals = [difference_interval(scores.loc[m] - best_row) if best_row is not None and m in tested and m != best else (math.nan, math.nan) for m in names]
        verdicts = [equivalence(iv, margin, hib) for iv in intervals]
        table["diff_vs_best_ci90_low"], table["diff_vs_best_ci90_high"] = [iv[0] for iv in intervals], [iv[1] for iv in intervals]
        for i, col in enumerate(("equivalent_to_best", "non_inferior")):
            table[col] = pd.array([pd.NA if v[i] is None else v[i] for v in verdicts], dtype="boolean")
    table = table.sort_values("avg_rank", na_position="last", kind="stable").reset_index(drop=True)
    across = Across(table, datasets, metric, hib, tested, alpha=alpha, verdict="", notes=notes, wilcoxon=sizes, margin=margin, **result)
    across.verdict = verdict(across)
    return across


def verdict(a: Across) -> str:
    """One line: the best model on average rank and what the tests can say about it."""
    if len(a.tested) < 2:
        return f"no verdict: fewer than 2 models have {a.metric} on every dataset"
    t = a.table.set_index("model")
    best = t.index[0]
    n = len(a.datasets)
    head = f"{best} is best on average rank ({t.loc[best, 'avg_rank']:.2f} over {n} datasets)"
    close = [m for m in a.tested if m != best and t.loc[m, "avg_rank"] - t.loc[best, "avg_rank"] < a.cd]
    beaten = [m for m in a.tested if m != best and m not in close]
    if a.friedman is None:
        return f"{head}; no Friedman test with {n} datasets and {len(a.tested)} models, so no significance claim (Nemenyi CD {a.cd:.2f})"
    if a.friedman.f_p >= a.alpha:
        return f"{head}; the Friedman test finds no difference among the {len(a.tested)} models (Iman-Davenport p = {a.friedman.f_p:.3g})"
    parts = [head]
    if close:
        parts.append(f"not significantly better than {', '.join(close)} (CD {a.cd:.2f})")
    if beaten:
        parts.append(f"significantly better than {', '.join(beaten)} (Nemenyi, CD {a.cd:.2f})")
    return "; ".join(parts)

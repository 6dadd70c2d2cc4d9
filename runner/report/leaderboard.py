"""The leaderboard: one row per model, best first, built with pandas from run directories.

Numbers come from history.csv at each seed's selected epoch (`report.select`: the final epoch,
or the best epoch on val; never one chosen on test), the paired tests from the test
predictions saved for that epoch (predictions/<model>/seed_<s>.npz), static facts (arch,
params, FLOPs, optimizer, sweep values, ...) from compare.models.csv. No file is written here.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from compare.errors import ReportError, did_you_mean
from compare.metrics.builtin import HEADLINE, Metric, higher_is_better, split_column, value_range
from compare.metrics.selection import selection_metric
from compare.metrics.significance import ALPHA, accuracy_interval, holm, t_interval, t_quantile_note, within
from compare.report import verdict
from compare.report.run_data import RunData, differences_line, one_task, run_labels

TEST_ACC, VAL_ACC = split_column("test"), split_column("val")  # the headline accuracy's history.csv columns
PARTS = ("mean", "std", "ci95_low", "ci95_high")  # a ranked metric's columns: test_acc_mean, ...
CORE = [
    "rank", "run", "model", "family", "arch", "params", "trainable_params", "flops_per_sample",
    *(f"{TEST_ACC}_{part}" for part in PARTS), "test_loss_mean",
    "selected_epoch", "selected_on", f"{VAL_ACC}_mean", "val_loss_mean",
    "train_time_s", "samples_per_s", "status", "stopped_at", "eliminated_by", "p_vs_best", "tied_with_best",
    "equivalent_to_best", "non_inferior", "diff_vs_best_ci90_low", "diff_vs_best_ci90_high",  # with a margin (docs/verdict.md)
    "mde_vs_best", "seeds_needed", "p_vs_best_raw", "wins_vs_best", "losses_vs_best",
    "grad_norm_mean", "grad_norm_max", "grad_norm_final", "grad_nonfinite",
    "train_loss_mean", "epochs", "seeds", "test_samples",
]
SELECTED_ON = {"final": "final", "best_val": "val"}
NOT_SELECTABLE = ("diverged", "failed")  # an epoch whose evaluation no longer counted (engine/slot.py)
NOT_METRICS = {"seed", "epoch", "model_seed", "train_samples"}


@dataclass
class Evidence:
    """What backs the table's claims; leaderboard.md prints it above the table."""

    metric: str
    higher_is_better: bool
    reference: str | None  # the rank-1 model every other model is tested against
    seeds: list[int]
    test_samples: int | None
    interval: str  # how the 95 % intervals were computed
    comparisons: int  # size of the Holm family
    runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    protocol: str = ""  # one line: how the reported epoch was selected, and what test read
    per_seed: pd.DataFrame | None = None  # exact McNemar per seed against the reference
    test: str = verdict.HEADLINE_TEST  # the paired test behind p_vs_best, in words
    margin: float | None = None  # [report] margin / --margin: equivalence within +-margin, in the metric's units


@dataclass
class Leaderboard:
    table: pd.DataFrame
    evidence: Evidence


def build(runs: list[RunData], metric: str | None = None, select: str | None = None, margin: float | None = None) -> Leaderboard:
    """One run: its leaderboard. Several: one table, models keyed by (run, model); the paired
    test spans runs only where they scored the same test samples. `select` overrides the
    runs' `report.select`."""
    if len(runs) == 1:
        return leaderboard(runs[0], metric, select, margin)
    differ = one_task(runs)  # refused where the tasks differ
    merged, keys, notes = _merge(runs, select)
    board = leaderboard(merged, metric, select, margin if margin is not None else runs[0].config.get("report", {}).get("margin"))
    if differ:  # the paired test says nothing of how the runs differ
        notes.append(differences_line(run_labels(runs), differ, board.evidence.metric))
    table = board.table
    table.insert(1, "run", [keys[k][0] for k in table["model"]])
    table["model"] = [keys[k][1] for k in table["model"]]
    board.evidence.runs = list(dict.fromkeys(run for run, _ in keys.values()))
    board.evidence.notes = notes + [n for r in runs for n in r.notes] + board.evidence.notes  # damaged prediction files
    if board.evidence.reference is not None:
        run, model = keys[board.evidence.reference]
        board.evidence.reference = f"{model} ({run})"
    if board.evidence.per_seed is not None:
        board.evidence.per_seed["model"] = [f"{keys[k][1]} ({keys[k][0]})" for k in board.evidence.per_seed["model"]]
    return board


def leaderboard(run: RunData, metric: str | None = None, select: str | None = None, margin: float | None = None) -> Leaderboard:
    select = select_of(run, select)
    margin = verdict.margin_of(run, margin)
    if "_selected" not in run.history:  # merged runs come marked, each run by itself
        run = replace(run, history=with_selection(run, select))
    metric = verdict.column(run, metric or run.rank_by)
    key = "final" if select == "final" else "best_val"
    found = verdict.registered(run, metric)
    if found is not None and metric != TEST_ACC:  # the engine counts accuracy on every row: a NaN there is the run's own
        run = replace(run, history=verdict.filled(run, metric, found, key))
    history = run.history
    candidates = [c for c in history.columns if c not in NOT_METRICS and not c.startswith("_") and pd.api.types.is_numeric_dtype(history[c])]
    if metric not in candidates:
        raise ReportError(f"--metric {metric!r}: not a numeric history.csv column{did_you_mean(metric, candidates)} (one of {', '.join(candidates)})")
    hib = higher_is_better(metric, found.higher if found is not None else None)
    n_test = run.test_samples
    rows = [_summarise(run, name, metric, n_test, select, value_range(metric, found)) for name in run.model_names if (history["model"] == name).any()]
    table = pd.DataFrame(rows)
    ties, loss_note = _tie_breaks(run, metric, table)
    table = table.sort_values([f"{metric}_mean", *ties], ascending=[not hib, *(not higher_is_better(c.removeprefix("_tie_")) for c in ties)], na_position="last", kind="stable")
    table = table.drop(columns=[c for c in ties if c.startswith("_tie_")])
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.reset_index(drop=True)

    reference = table["model"].iloc[0] if len(table) else None
    evidence = Evidence(metric, hib, reference, run.seeds, n_test, _interval_words(table.pop("_interval"), metric, found is not None, table[f"{metric}_mean"].notna().any()), 0, margin=margin)
    accuracy = _interval_words(table.pop("_acc_interval"), TEST_ACC, True, table[f"{TEST_ACC}_mean"].notna().any())
    if loss_note:
        evidence.notes.append(loss_note)
    evidence.protocol = _protocol(run, select, table)
    evidence.notes += run.notes  # damaged prediction files: those models have no paired test
    tested = found if found is not None else verdict.registered(run, TEST_ACC)  # a column with no test of its own (the loss, a time): accuracy's
    if tested is not None:
        _metric_tests(run, table, evidence, tested, key)
    else:
        _write_tests(table, evidence, *[np.full(len(table), math.nan) for _ in range(3)], *[pd.array([pd.NA] * len(table), dtype="Int64") for _ in range(2)])
    if found is None and metric != TEST_ACC:  # the predictions are saved; this column has nothing per sample in them
        kept = " (evaluation keeps the shared loss as its mean over the test set, not per sample)" if metric.endswith("loss") else ""
        instead = "p_vs_best tests accuracy instead (exact McNemar on top-1 correctness)" if tested is not None else "the task has no accuracy to test instead: no paired test"
        evidence.notes.append(f"{metric} has no per-sample statistic{kept}: no interval over the test samples and no paired test of its own (docs/metrics.md); {instead}")
    if margin is not None and (found is None and metric != TEST_ACC or "equivalent_to_best" not in table):  # the margin is in this metric's units
        verdict.equivalence_columns(table, evidence, [(math.nan, math.nan)] * len(table))
        evidence.notes.append(f"--margin {margin:g}: {metric} has no paired test of its own, so no equivalence verdict")
    if metric != TEST_ACC and table[f"{TEST_ACC}_mean"].notna().any():  # leaderboard.md shows accuracy's intervals too
        evidence.interval += f"; {TEST_ACC}: {accuracy}"
    if (note := t_quantile_note(len(run.seeds))) is not None:
        evidence.notes.append(note)
    if metric == TEST_ACC and (note := verdict.base_rate(run, table)) is not None:
        evidence.notes.append(note)

    # models.csv: arch, params, FLOPs, optimizer, lr, scheduler and whatever columns it grows (sweeps).
    table = table.merge(run.models.drop(columns=[c for c in run.models.columns if c in table.columns and c != "model"]), on="model", how="left")
    metric_cols = [f"{metric}_{part}" for part in PARTS] if metric != TEST_ACC else []
    first = [c for c in CORE if c in table.columns and c not in metric_cols]
    at = first.index(f"{TEST_ACC}_mean")
    first = first[:at] + metric_cols + first[at:]
    return Leaderboard(table[first + [c for c in table.columns if c not in first]], evidence)


def _metric_tests(run: RunData, table: pd.DataFrame, evidence: Evidence, metric: Metric, key: str) -> None:
    """p_vs_best, tied_with_best, mde_vs_best, seeds_needed and (one seed) the bootstrap
    interval for any registered metric, accuracy included, in its own test family
    (runner/report/verdict.py); for accuracy, the per-seed McNemar table of leaderboard.md."""
    names = list(table["model"])
    v = verdict.judge(run, metric, names, evidence.reference, key)
    raw = np.array([v.p.get(m, math.nan) for m in names])
    _write_tests(table, evidence, raw, [v.mde.get(m, math.nan) for m in names], [v.needed.get(m, math.nan) for m in names],
                 pd.array([v.wins.get(m, pd.NA) for m in names], dtype="Int64"), pd.array([v.losses.get(m, pd.NA) for m in names], dtype="Int64"))
    col = evidence.metric
    if v.intervals:
        for i, m in enumerate(names):
            if m in v.intervals:
                table.loc[i, [f"{col}_ci95_low", f"{col}_ci95_high"]] = v.intervals[m]
        evidence.interval = verdict.FAMILY_INTERVAL[metric.family] + ("; Student-t over seeds where a model has several" if len(run.seeds) > 1 else "")
    evidence.test = verdict.described_test(metric)
    if evidence.margin is not None:
        verdict.equivalence_columns(table, evidence, [v.diff.get(m, (math.nan, math.nan)) for m in names])
    evidence.per_seed = pd.DataFrame(v.per_seed) if v.per_seed and metric.name == HEADLINE else None
    evidence.notes += v.notes


def select_of(run: RunData, select: str | None) -> str:
    """`select` (the CLI's --select), else the run's own `report.select`."""
    select = select or run.config.get("report", {}).get("select", "final")
    if select not in SELECTED_ON:
        raise ReportError(f"--select {select!r}: expected one of {', '.join(SELECTED_ON)}{did_you_mean(select, list(SELECTED_ON))}")
    return select


def with_selection(run: RunData, select: str) -> pd.DataFrame:
    """The run's history with a `_selected` column (the input is left as it is)."""
    has_val = "val_loss" in run.history and run.history["val_loss"].notna().any()
    if select == "best_val" and not has_val:
        raise ReportError(f"{run.path}: --select best_val: the run has no val split (history.csv has no val_loss); run it with data.val_fraction > 0")
    return run.history.assign(_selected=_selected_rows(run, select))


def _selected_rows(run: RunData, select: str) -> pd.Series:
    """True on each (model, seed)'s selected epoch: its last, or its best on val by
    engine.early_stopping.selection_metric, with the slot's rule (the first best epoch; an epoch
    in which the model diverged or failed never counts). The same epochs whose test
    predictions the run saved (runner/run/shared_pass.py)."""
    h = run.history
    chosen = pd.Series(False, index=h.index)
    for (model, _), rows in h.groupby(["model", "seed"], sort=False):
        rows = rows.sort_values("epoch")
        pick = rows.index[-1]
        if select == "best_val":
            ok = rows[~rows.get("status", pd.Series("", index=rows.index)).isin(NOT_SELECTABLE)]
            metric = selection_metric(stop_metric(run.config, model), float(ok[VAL_ACC].iloc[0]) if len(ok) else math.nan, selection_rank(run))
            values = ok[metric].dropna()
            own = verdict.registered(run, "test_" + metric.removeprefix("val_")) if metric.startswith("val_") else None
            if len(values):
                pick = values.idxmax() if higher_is_better(metric, own.higher if own is not None else None) else values.idxmin()
        chosen[pick] = True
    return chosen


def selection_rank(run: RunData) -> str | None:
    """The val metric a best epoch is chosen on without early stopping, as the slot chose it
    (runner/engine/slot.py `select_on`): [report] rank_by, else a non-classification task's
    first metric, else None (val_acc)."""
    rank = run.config.get("report", {}).get("rank_by")
    if rank:
        return "val_" + rank.removeprefix("test_").removeprefix("val_")
    first = run.env.get("rank_by")
    return f"val_{first}" if run.task[0] != "classification" and first and first != "loss" else None


def stop_metric(config: dict, model: str) -> str | None:
    """The model's early-stopping metric in the run's config.toml (its own, else the experiment's)."""
    entry = next((m for m in config.get("model", []) if m.get("name") == model), {})
    stopping = entry.get("early_stopping") or config.get("experiment", {}).get("early_stopping") or {}
    return stopping.get("metric", "val_loss") if stopping else None


def _protocol(run: RunData, select: str, table: pd.DataFrame) -> str:
    """One line: which epoch is reported, what val is, and when test was read."""
    splits = run.env.get("splits", {})
    n_val = run.env.get("val_samples") or 0
    val = f"val: {splits.get('val', f'{n_val} samples')}" if n_val else "no val split"
    epochs = sorted({int(e) for cell in table["selected_epoch"] for e in str(cell).split("/") if e.isdigit()})
    when = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]} (per model and seed)" if epochs else "no epoch"
    test = f"test ({run.test_samples:,} samples)" if run.test_samples else "test"
    if select == "best_val":
        return f"selected on val (each model's best epoch by {selection_rank(run) or 'val_acc'}, or its val early-stopping metric; {val}); {test} read at {when}"
    return f"selected: the final epoch ({val}); {test} read at {when}"


def _summarise(run: RunData, name: str, metric: str, n_test: int | None, select: str, bounds: tuple[float, float]) -> dict:
    h = run.history[run.history["model"] == name]
    final = h.loc[h.groupby("seed")["epoch"].idxmax()].sort_values("seed")  # last epoch of every seed
    chosen = h[h["_selected"]].sort_values("seed")  # the reported epoch of every seed
    col = lambda frame, c: frame[c] if c in frame else pd.Series(math.nan, index=frame.index)  # noqa: E731
    acc = accuracy_interval(col(chosen, TEST_ACC), n_test)
    seconds = col(h, "time_s")
    epochs = [str(int(e)) for e in chosen["epoch"]]
    row = {
        "model": name,
        **{f"{TEST_ACC}_{part}": v for part, v in zip(PARTS, (acc.mean, acc.std, acc.low, acc.high))},
        "test_loss_mean": col(chosen, "test_loss").mean(),
        "selected_epoch": int(epochs[0]) if len(set(epochs)) == 1 else "/".join(epochs),  # as leaderboard.csv reads back
        "selected_on": SELECTED_ON[select],
        f"{VAL_ACC}_mean": col(chosen, VAL_ACC).mean(),
        "val_loss_mean": col(chosen, "val_loss").mean(),
        "train_time_s": seconds.groupby(h["seed"]).sum().mean(),
        "samples_per_s": col(h, "train_samples").sum() / seconds.sum() if seconds.sum() > 0 else math.nan,
        "status": _status(col(final, "status")),
        "stopped_at": "; ".join(sorted({str(v) for v in col(final, "stopped_at").dropna() if str(v)})) or math.nan,
        "eliminated_by": "; ".join(sorted({str(v) for v in col(final, "eliminated_by").dropna() if str(v)})) or math.nan,
        "grad_norm_mean": col(h, "grad_norm_mean").mean(),
        "grad_norm_max": col(h, "grad_norm_max").max(),
        "grad_norm_final": col(final, "grad_norm_mean").mean(),
        "grad_nonfinite": int(col(h, "grad_nonfinite").fillna(0).sum()),
        "train_loss_mean": col(final, "train_loss").mean(),
        "epochs": int(final["epoch"].max()),
        "seeds": len(final),
        "test_samples": n_test,
        "_interval": acc.method,
        "_acc_interval": acc.method,
    }
    if metric != TEST_ACC:
        n = n_test if metric.startswith("test_") else int(final["train_samples"].iloc[-1]) if "train_samples" in final else None
        iv = accuracy_interval(chosen[metric], n) if "acc" in metric else within(t_interval(chosen[metric]), bounds)
        row |= {f"{metric}_{part}": v for part, v in zip(PARTS, (iv.mean, iv.std, iv.low, iv.high))}
        row["_interval"] = iv.method  # the footer describes the ranked metric's intervals, not accuracy's
    return row


def _tie_breaks(run: RunData, metric: str, table: pd.DataFrame) -> tuple[list[str], str | None]:
    """The columns that order models tied on the rank metric, and a note where the models'
    losses are not comparable. The loss breaks ties where every model's loss is the same function
    of its prediction; where a model returns more than its prediction (auxiliary logits,
    models.csv extra_outputs), the shared loss may hold terms the others' lack, so ties go to the
    run's other metrics, which every model computes on its prediction alone (hidden `_tie_`
    columns: each model's mean at the selected epochs)."""
    extra = run.models.set_index("model")["extra_outputs"] if "extra_outputs" in run.models else pd.Series(dtype=float)
    more = [m for m in table["model"] if extra.get(m, 0) > 0]
    if not more:
        return ["test_loss_mean"], None
    h = run.history[run.history["_selected"]]
    shared = [f"test_{m}" for m in run.env.get("metrics", []) if f"test_{m}" != metric and f"test_{m}" in h]
    for col in shared:
        table[f"_tie_{col}"] = table["model"].map(h.groupby("model")[col].mean())
    counts = ", ".join(f"{m} ({int(extra[m])} extra tensor{'s' if extra[m] > 1 else ''})" for m in more)
    note = (f"test_loss is not comparable across models: {counts} return(s) more than the prediction, and the shared loss sees it all "
            "(an auxiliary loss adds its terms); "
            + (f"compare on {', '.join(shared)} (each model's prediction alone), which also break ties on {metric}" if shared else "compare on the metrics of the prediction"))
    return [f"_tie_{c}" for c in shared], note


def searched_families(families: dict) -> set[str]:
    """The families (config.families) whose points a search sampled (sobol, random), not a grid."""
    return {name for name, made in (families or {}).items() if made.get("sampler", "grid") != "grid"}


def failures(table: pd.DataFrame, searched: set[str]) -> list[str]:
    """The models that make a finished run exit 3: one that failed, or one that diverged outside
    a search. A diverged trial of a searched family is a result of the search (a bad point of its
    space, counted in the family's trials), reported as diverged; it alone does not fail the run
    (docs/tuning.md)."""
    if not len(table) or "status" not in table:
        return []
    status = table["status"].astype(str)
    family = table["family"].astype(str) if "family" in table else table["model"].astype(str)
    bad = status.str.contains("failed") | (status.str.contains("diverged") & ~family.isin(searched))
    return table.loc[bad, "model"].astype(str).tolist()


def _status(statuses: pd.Series) -> str:
    """One word when every seed ended the same way, else counts ("done x2, diverged x1")."""
    counts = Counter(str(s) for s in statuses.dropna())
    if len(counts) <= 1:
        return next(iter(counts), "unknown")
    return ", ".join(f"{s} x{n}" for s, n in counts.most_common())


def _interval_words(methods: pd.Series, metric: str, registered: bool, finite: bool) -> str:
    """The footer's "95% CI" line: how the ranked metric's intervals were computed (a metric
    with a bootstrap interval over the test samples has it replaced in _metric_tests)."""
    words = {
        "t": "Student-t 95% interval over seeds (df = seeds - 1): variation from training randomness on this test set",
        "wilson": "Wilson 95% score interval over the test samples (one seed: variation from the draw of the test set)",
    }
    used = [m for m in dict.fromkeys(methods) if m in words]
    if used:
        return "; ".join(words[m] for m in used)
    if not finite:
        return "none (no finite values)"
    what = "the run kept no per-sample statistics of it" if registered else "it has no per-sample statistic"
    return f"none for {metric}: one seed, and {what} to resample (several seeds give a Student-t interval over seeds)"


def _write_tests(table: pd.DataFrame, evidence: Evidence, raw, mde, needed, wins, losses) -> None:
    """The verdict columns from each model's raw p against the reference (Holm over those
    tested; the reference is trivially tied with itself, its p stays empty), whatever the test."""
    adjusted = holm(raw)
    tied = pd.array([pd.NA if math.isnan(p) else bool(p >= ALPHA) for p in adjusted], dtype="boolean")
    if evidence.reference is not None and len(table):
        tied[0] = True
    table["p_vs_best"], table["tied_with_best"], table["p_vs_best_raw"] = adjusted, tied, raw
    table["mde_vs_best"], table["seeds_needed"] = mde, needed
    table["wins_vs_best"], table["losses_vs_best"] = wins, losses
    evidence.comparisons = int(np.isfinite(raw).sum())


def _data_signature(run: RunData) -> tuple:
    """What fixes the test set: dataset, its arguments, the test subset and the seed choosing it."""
    data, experiment = run.config.get("data", {}), run.config.get("experiment", {})
    subset = data.get("test_subset")
    return (data.get("dataset"), repr(data.get("args")), subset, experiment.get("seed") if subset else None)


def _merge(runs: list[RunData], select: str | None) -> tuple[RunData, dict[str, tuple[str, str]], list[str]]:
    """One RunData whose model names are "<run>/<model>" keys (model names cannot hold "/"),
    each run's epochs selected with its own config (or `select`)."""
    chosen = {select_of(r, select) for r in runs}
    if len(chosen) > 1:
        raise ReportError(f"the runs report differently selected epochs ({', '.join(sorted(chosen))}): pass --select final or --select best_val")
    select = chosen.pop()
    paths = [r.path.resolve() for r in runs]
    twice = next((r.path for r, p in zip(runs, paths) if paths.count(p) > 1), None)
    if twice is not None:
        raise ReportError(f"{twice}: run directory given more than once")
    labels = run_labels(runs)
    keys: dict[str, tuple[str, str]] = {}
    histories, models, predictions = [], [], {}
    targets = []
    for label, run in zip(labels, runs):
        key = {m: f"{label}/{m}" for m in run.model_names}
        keys |= {k: (label, m) for m, k in key.items()}
        histories.append(with_selection(run, select).assign(model=run.history["model"].map(key)))
        models.append(run.models.assign(model=run.models["model"].map(key)))
        predictions |= {key[m]: p for m, p in run.predictions.items() if m in key}
        first = next((p["target"] for seeds in run.predictions.values() for p in seeds.values()), None)
        targets.append(first)
    notes = []
    same = len({_data_signature(r) for r in runs}) == 1 and all(t is not None and np.array_equal(t, targets[0]) for t in targets)
    if not same:
        predictions = {}
        notes.append("the runs did not score the same test samples (dataset, test subset or targets differ): no paired test across runs")
    n_test = {r.test_samples for r in runs}
    env = {"test_samples": n_test.pop() if len(n_test) == 1 else None, "classes": runs[0].env.get("classes")}
    env |= {k: runs[0].env[k] for k in ("task", "rank_by", "user_metrics", "references_from") if k in runs[0].env}  # what the metrics need
    if len({(r.env.get("val_samples"), repr(r.env.get("splits", {}).get("val"))) for r in runs}) == 1:
        env |= {"val_samples": runs[0].env.get("val_samples"), "splits": runs[0].env.get("splits", {})}
    config = {"report": {"select": select}}
    merged = RunData(runs[0].path, pd.concat(histories, ignore_index=True), pd.concat(models, ignore_index=True), env, config, predictions)
    return merged, keys, notes

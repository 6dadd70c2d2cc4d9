"""The leaderboard: one row per model, best first, built with pandas from run directories.

Numbers come from history.csv (the final epoch of every seed), the paired test from the saved
test predictions (predictions/<model>/seed_<s>.npz), static facts (arch, params, FLOPs,
optimizer, sweep values, ...) from models.csv. No file is written here (see outputs.py).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from runner.report import stats
from runner.errors import ReportError, did_you_mean
from runner.report.run_data import RunData

CORE = [
    "rank", "run", "model", "arch", "params", "flops_per_sample",
    "test_acc_mean", "test_acc_std", "test_acc_ci95_low", "test_acc_ci95_high", "test_loss_mean",
    "best_epoch", "train_time_s", "samples_per_s", "status", "stopped_at", "p_vs_best", "tied_with_best",
    "p_vs_best_raw", "wins_vs_best", "losses_vs_best",
    "grad_norm_mean", "grad_norm_max", "grad_norm_final", "grad_nonfinite",
    "train_loss_mean", "best_test_acc", "epochs", "seeds", "test_samples",
]
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
    per_seed: pd.DataFrame | None = None  # exact McNemar per seed against the reference


@dataclass
class Leaderboard:
    table: pd.DataFrame
    evidence: Evidence


def higher_is_better(metric: str) -> bool:
    return "acc" in metric or metric == "samples_per_s"


def build(runs: list[RunData], metric: str = "test_acc") -> Leaderboard:
    """One run: its leaderboard. Several: one table, models keyed by (run, model); the paired
    test spans runs only where they scored the same test samples."""
    if len(runs) == 1:
        return leaderboard(runs[0], metric)
    merged, keys, notes = _merge(runs)
    board = leaderboard(merged, metric)
    table = board.table
    table.insert(1, "run", [keys[k][0] for k in table["model"]])
    table["model"] = [keys[k][1] for k in table["model"]]
    board.evidence.runs = list(dict.fromkeys(run for run, _ in keys.values()))
    board.evidence.notes = notes + board.evidence.notes
    if board.evidence.reference is not None:
        run, model = keys[board.evidence.reference]
        board.evidence.reference = f"{model} ({run})"
    if board.evidence.per_seed is not None:
        board.evidence.per_seed["model"] = [f"{keys[k][1]} ({keys[k][0]})" for k in board.evidence.per_seed["model"]]
    return board


def leaderboard(run: RunData, metric: str = "test_acc") -> Leaderboard:
    history = run.history
    candidates = [c for c in history.columns if c not in NOT_METRICS and pd.api.types.is_numeric_dtype(history[c])]
    if metric not in candidates:
        raise ReportError(f"--metric {metric!r}: not a numeric history.csv column{did_you_mean(metric, candidates)} (one of {', '.join(candidates)})")
    hib = higher_is_better(metric)
    n_test = run.test_samples
    rows = [_summarise(run, name, metric, n_test) for name in run.model_names if (history["model"] == name).any()]
    table = pd.DataFrame(rows)
    table = table.sort_values([f"{metric}_mean", "test_loss_mean"], ascending=[not hib, True], na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.reset_index(drop=True)

    reference = table["model"].iloc[0] if len(table) else None
    evidence = Evidence(metric, hib, reference, run.seeds, n_test, _interval_words(table.pop("_interval")), 0)
    _paired_tests(run, table, evidence)

    # models.csv: arch, params, FLOPs, optimizer, lr, scheduler and whatever columns it grows (sweeps).
    table = table.merge(run.models.drop(columns=[c for c in run.models.columns if c in table.columns and c != "model"]), on="model", how="left")
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    metric_cols = [f"{metric}_{part}" for part in ("mean", "std", "ci95_low", "ci95_high")] if metric != "test_acc" else []
    first = [c for c in CORE if c in table.columns and c not in metric_cols]
    first = first[: first.index("test_acc_mean")] + metric_cols + first[first.index("test_acc_mean") :]
    return Leaderboard(table[first + [c for c in table.columns if c not in first]], evidence)


def _summarise(run: RunData, name: str, metric: str, n_test: int | None) -> dict:
    h = run.history[run.history["model"] == name]
    final = h.loc[h.groupby("seed")["epoch"].idxmax()].sort_values("seed")  # last epoch of every seed
    col = lambda frame, c: frame[c] if c in frame else pd.Series(math.nan, index=frame.index)  # noqa: E731
    acc = stats.accuracy_interval(col(final, "test_acc"), n_test)
    curve = h.groupby("epoch")["test_acc"].mean() if "test_acc" in h else pd.Series(dtype=float)  # mean over seeds
    seconds = col(h, "time_s")
    row = {
        "model": name,
        "test_acc_mean": acc.mean, "test_acc_std": acc.std, "test_acc_ci95_low": acc.low, "test_acc_ci95_high": acc.high,
        "test_loss_mean": col(final, "test_loss").mean(),
        "best_epoch": curve.idxmax() if curve.notna().any() else math.nan,
        "best_test_acc": curve.max(),
        "train_time_s": seconds.groupby(h["seed"]).sum().mean(),
        "samples_per_s": col(h, "train_samples").sum() / seconds.sum() if seconds.sum() > 0 else math.nan,
        "status": _status(col(final, "status")),
        "stopped_at": "; ".join(sorted({str(v) for v in col(final, "stopped_at").dropna() if str(v)})) or math.nan,
        "grad_norm_mean": col(h, "grad_norm_mean").mean(),
        "grad_norm_max": col(h, "grad_norm_max").max(),
        "grad_norm_final": col(final, "grad_norm_mean").mean(),
        "grad_nonfinite": int(col(h, "grad_nonfinite").fillna(0).sum()),
        "train_loss_mean": col(final, "train_loss").mean(),
        "epochs": int(final["epoch"].max()),
        "seeds": len(final),
        "test_samples": n_test,
        "_interval": acc.method,
    }
    if metric != "test_acc":
        n = n_test if metric.startswith("test_") else int(final["train_samples"].iloc[-1]) if "train_samples" in final else None
        iv = stats.accuracy_interval(final[metric], n) if "acc" in metric else stats.t_interval(final[metric])
        row |= {f"{metric}_mean": iv.mean, f"{metric}_std": iv.std, f"{metric}_ci95_low": iv.low, f"{metric}_ci95_high": iv.high}
    return row


def _status(statuses: pd.Series) -> str:
    """One word when every seed ended the same way, else counts ("done x2, diverged x1")."""
    counts = Counter(str(s) for s in statuses.dropna())
    if len(counts) <= 1:
        return next(iter(counts), "unknown")
    return ", ".join(f"{s} x{n}" for s, n in counts.most_common())


def _interval_words(methods: pd.Series) -> str:
    words = {
        "t": "Student-t 95% interval over seeds (df = seeds - 1): variation from training randomness on this test set",
        "wilson": "Wilson 95% score interval over the test samples (one seed: variation from the draw of the test set)",
    }
    used = [m for m in dict.fromkeys(methods) if m in words]
    return "; ".join(words[m] for m in used) if used else "none (no finite values)"


def _pair_seeds(a: dict[int, dict], b: dict[int, dict]) -> list[tuple[int, int]]:
    """Seeds both models have predictions for; runs with disjoint seed lists pair in order
    (independent training runs either way). Equal counts keep the sign test's null exact."""
    common = sorted(set(a) & set(b))
    if common:
        return [(s, s) for s in common]
    return list(zip(sorted(a), sorted(b)))


def _paired_tests(run: RunData, table: pd.DataFrame, evidence: Evidence) -> None:
    """p_vs_best / tied_with_best: each model vs the rank-1 model (stats.paired_over_seeds),
    Holm-corrected over the models compared."""
    n = len(table)
    raw, wins, losses = np.full(n, math.nan), pd.array([pd.NA] * n, dtype="Int64"), pd.array([pd.NA] * n, dtype="Int64")
    ref = evidence.reference
    per_seed = []
    ref_preds = run.predictions.get(ref, {}) if ref is not None else {}
    if ref is not None and not ref_preds:
        evidence.notes.append(f"no saved test predictions for {ref}: no paired test")
    for i, name in enumerate(table["model"]):
        preds = run.predictions.get(name, {})
        if name == ref or not ref_preds or not preds:
            continue
        pairs = _pair_seeds(preds, ref_preds)
        if not all(np.array_equal(preds[s]["target"], ref_preds[r]["target"]) for s, r in pairs):
            evidence.notes.append(f"{name}: test targets differ from {ref}'s: not paired")
            continue
        correct = np.stack([preds[s]["final"] == preds[s]["target"] for s, _ in pairs])
        correct_ref = np.stack([ref_preds[r]["final"] == ref_preds[r]["target"] for _, r in pairs])
        result = stats.paired_over_seeds(correct, correct_ref)
        raw[i], wins[i], losses[i] = result.p, result.wins, result.losses
        for (s, _), c, r in zip(pairs, correct, correct_ref):
            b, c_ = stats.discordant(c, r)
            per_seed.append({"model": name, "seed": s, "only_model_right": b, "only_best_right": c_, "p_mcnemar": stats.mcnemar_exact(b, c_)})
    adjusted = stats.holm(raw)
    tied = pd.array([pd.NA if math.isnan(p) else bool(p >= stats.ALPHA) for p in adjusted], dtype="boolean")
    if ref is not None and len(table):
        tied[0] = True  # the reference is trivially tied with itself; its p stays empty
    table["p_vs_best"], table["tied_with_best"], table["p_vs_best_raw"] = adjusted, tied, raw
    table["wins_vs_best"], table["losses_vs_best"] = wins, losses
    evidence.comparisons = int(np.isfinite(raw).sum())
    evidence.per_seed = pd.DataFrame(per_seed) if per_seed else None


def _data_signature(run: RunData) -> tuple:
    """What fixes the test set: dataset, its arguments, the test subset and the seed choosing it."""
    data, experiment = run.config.get("data", {}), run.config.get("experiment", {})
    subset = data.get("test_subset")
    return (data.get("dataset"), repr(data.get("args")), subset, experiment.get("seed") if subset else None)


def _merge(runs: list[RunData]) -> tuple[RunData, dict[str, tuple[str, str]], list[str]]:
    """One RunData whose model names are "<run>/<model>" keys (model names cannot hold "/")."""
    paths = [r.path.resolve() for r in runs]
    twice = next((r.path for r, p in zip(runs, paths) if paths.count(p) > 1), None)
    if twice is not None:
        raise ReportError(f"{twice}: run directory given more than once")
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):  # same folder name in different places: use the paths
        labels = [str(r.path) for r in runs]
    keys: dict[str, tuple[str, str]] = {}
    histories, models, predictions = [], [], {}
    targets = []
    for label, run in zip(labels, runs):
        key = {m: f"{label}/{m}" for m in run.model_names}
        keys |= {k: (label, m) for m, k in key.items()}
        histories.append(run.history.assign(model=run.history["model"].map(key)))
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
    merged = RunData(runs[0].path, pd.concat(histories, ignore_index=True), pd.concat(models, ignore_index=True), env, {}, predictions)
    return merged, keys, notes

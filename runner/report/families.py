"""The family verdict (`[report] by = "family"`, `compare leaderboard RUN --by family`): is
family A better than family B when each is tuned, with equal budgets? (docs/tuning.md)

Per family and seed, the trial with the best val score (ties: lower val loss, then the earlier
trial) is chosen; test is read only for the score of that choice. Families are compared with a
tuning-aware paired bootstrap (runner/report/tuning.py): a test of the chosen models alone
would ask whether those two trained models differ, and rejects a true "the families are
equally good" far more often than alpha (docs/tuning.md has the simulation).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from compare.errors import ReportError
from compare.metrics.power import mde_from_se
from compare.metrics.significance import ALPHA, bootstrap, bootstrap_p, holm, percentile_interval
from compare.report import tuning, verdict
from compare.report.leaderboard import NOT_SELECTABLE, select_of, with_selection
from compare.report.run_data import RunData

RESAMPLES = 2_000  # joint resamples (trials and test samples) behind every band, p and interval


@dataclass
class Family:
    name: str
    trials: list[str]  # finished trials, in config order
    planned: int  # trials the config made (failed and diverged ones included)
    val: np.ndarray  # [seeds, trials] at each trial's reported epoch
    goodness: np.ndarray  # [seeds, trials]: the val order (tuning.goodness)
    test: np.ndarray  # [seeds, trials]
    cost_s: np.ndarray  # [trials]: training seconds per seed
    points: str  # which family's points it shares (the bootstrap pairs those)


@dataclass
class FamilyBoard:
    table: pd.DataFrame
    curves: pd.DataFrame  # family, n, expected_val (+ band), expected_test (+ band), cost_s, p_best
    metric: str
    higher: bool
    lines: list[str] = field(default_factory=list)  # protocol, test, budget warnings, summary


def build(run: RunData, metric: str | None = None, target: float | None = None) -> FamilyBoard:
    select = select_of(run, None)
    run = run if "_selected" in run.history else replace(run, history=with_selection(run, select))
    column = verdict.column(run, metric or run.rank_by)
    found = verdict.registered(run, column)
    if found is None:
        raise ReportError(f"--by family ranks by a metric of docs/metrics.md with its per-sample statistics kept; {column!r} is not one")
    key = "final" if select == "final" else "best_val"
    history = verdict.filled(run, column, found, key)
    val_col = "val_" + column.removeprefix("test_")
    if val_col not in history or history[val_col].isna().all():
        raise ReportError(f"{run.path}: --by family chooses each family's trial on {val_col}, which history.csv lacks: run with data.val_fraction > 0 (and {found.name} in [report] metrics)")
    families, notes = _families(run, history, column, val_col, found.higher)
    seeds = run.seeds
    resamplers = [verdict.kept(run, t, s, key, found) for f in families for t in f.trials for s in seeds]
    if any(k is None for k in resamplers):
        raise ReportError(f"{run.path}: --by family needs the kept test statistics of every finished trial ({', '.join(found.needs)})")
    boot = bootstrap([found.resampler(k) for k in resamplers], len(resamplers[0]), RESAMPLES)  # [trials x seeds, B], shared rows
    test_b, at = {}, 0
    for f in families:
        size = len(f.trials) * len(seeds)
        test_b[f.name] = boot[at : at + size].reshape(len(f.trials), len(seeds), RESAMPLES).transpose(2, 1, 0)  # [B, seeds, trials]
        at += size
    table, curves, summary = judge(families, test_b, found.higher, target, column.removeprefix("test_"))
    sweep = run.models.set_index("model").filter(like="sweep.") if "model" in run.models else pd.DataFrame()
    for c in sweep.columns:  # the chosen trial's hyperparameters, where every seed chose the same trial
        table[c] = [sweep.at[t, c] if t in sweep.index else math.nan for t in table["chosen_trial"]]
    lines = [
        f"protocol: each family's trial chosen per seed on {val_col} at its reported epoch (ties: lower val_loss, then the earlier trial); test read for the chosen trial only",
        f"test: tuning-aware paired bootstrap ({RESAMPLES:,} resamples of the trials within each family, rows shared by families that searched the same points, and of the test samples, on the same indices for every trial); p Holm-corrected against the best family",
    ] + _budget_lines(families) + notes + [summary]
    return FamilyBoard(table, curves, column, found.higher, [line for line in lines if line])


def judge(families: list[Family], test_b: dict[str, np.ndarray], higher: bool, target: float | None = None, metric: str = "score") -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(verdict table, curves, summary line) from each family's scores and its joint test
    replicates [B, seeds, trials] (every family on the same test resample per row)."""
    rows, curves, replicate = [], [], {}
    for f in families:
        curve, replicate[f.name] = _curves(f, test_b[f.name], higher)
        curves.append(curve)
        rows.append(_row(f, curve, target, higher))
    frame = pd.concat(curves, ignore_index=True)
    table = pd.DataFrame(rows).sort_values("score", ascending=not higher, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    _tests(table, replicate, higher)
    _p_best(frame, replicate, families, higher)
    summary = _summary(frame, replicate, families, metric, higher)
    table = table.rename(columns={"score": f"test_{metric}", "score_low": f"test_{metric}_ci95_low", "score_high": f"test_{metric}_ci95_high", "val": f"val_{metric}"})
    return table, frame, summary


def _families(run: RunData, history: pd.DataFrame, column: str, val_col: str, higher: bool) -> tuple[list[Family], list[str]]:
    """The run's families, in config order, with each finished trial's val and test scores."""
    models = run.models.set_index("model") if "model" in run.models else pd.DataFrame()
    family_of = {m: (models.at[m, "family"] if "family" in models and m in models.index and isinstance(models.at[m, "family"], str) else m) for m in run.model_names}
    chosen = history[history["_selected"]]
    described = run.config.get("families", {})
    by_seed = chosen.set_index(["seed", "model"])
    seconds = history.groupby(["model", "seed"])["time_s"].sum().groupby("model").mean() if "time_s" in history else pd.Series(dtype=float)
    out, notes = [], []
    for name in dict.fromkeys(family_of.values()):
        members = [m for m, f in family_of.items() if f == name]
        finished = []
        for m in members:
            rows = chosen[chosen["model"] == m]
            bad = rows.get("status", pd.Series(dtype=str)).isin(NOT_SELECTABLE).any()
            if len(rows) == len(run.seeds) and not bad and rows[[column, val_col]].notna().all().all():
                finished.append(m)
        if len(finished) < len(members):
            notes.append(f"{name}: {len(members) - len(finished)} of {len(members)} trials failed, diverged or have no val/test score; the curves use the {len(finished)} that finished")
        if not finished:
            continue
        grid = lambda col: by_seed[col].unstack("model").loc[run.seeds, finished].to_numpy(float)  # noqa: E731 - [seeds, trials]
        val = grid(val_col)
        loss = grid("val_loss") if "val_loss" in chosen else np.zeros_like(val)
        desc = described.get(name)
        points = f"{zlib.crc32(json.dumps(desc, sort_keys=True, default=str).encode())}:{len(finished)}" if desc and len(finished) == len(members) else name
        out.append(Family(name, finished, len(members), val, tuning.goodness(val, np.nan_to_num(loss, nan=np.inf), higher), grid(column),
                          np.array([seconds.get(m, math.nan) for m in finished]), points))
    if not out:
        raise ReportError(f"{run.path}: no family has a finished trial with val and test scores")
    return out, notes


def _curves(f: Family, test_b: np.ndarray, higher: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """The family's tuning curves with their bands, and [B, n] of the expected test score per
    joint replicate (its last column: the family's score at its whole budget)."""
    ns = tuning.budgets(len(f.trials))
    rows = tuning.trial_resamples(len(f.trials), len(test_b), zlib.crc32(f.points.encode()))  # [B, N]
    expected_val = tuning.expected_best(f.val, higher, ns).mean(axis=0)
    expected_test = tuning.expected_selected(f.goodness, f.test, ns).mean(axis=0)
    val_b = np.mean([tuning.expected_best(v[rows], higher, ns) for v in f.val], axis=0)
    test_rep = np.mean([tuning.expected_selected(g[rows], np.take_along_axis(test_b[:, s], rows, axis=1), ns) for s, g in enumerate(f.goodness)], axis=0)
    low, high = np.nanquantile(test_rep, [0.025, 0.975], axis=0)
    vlow, vhigh = np.nanquantile(val_b, [0.025, 0.975], axis=0)
    curve = pd.DataFrame({
        "family": f.name, "n": ns, "expected_val": expected_val, "val_low": vlow, "val_high": vhigh,
        "expected_test": expected_test, "test_low": low, "test_high": high, "cost_s": ns * np.nanmean(f.cost_s) if np.isfinite(f.cost_s).any() else math.nan,
    })
    return curve, test_rep


def _row(f: Family, curve: pd.DataFrame, target: float | None, higher: bool) -> dict:
    picks = [f.trials[int(np.argmax(g))] for g in f.goodness]
    spread = float(np.std(f.test.mean(axis=0), ddof=1)) if len(f.trials) > 1 else math.nan
    reach = tuning.trials_to_reach(curve["expected_test"].to_numpy(), curve["n"].to_numpy(), target, higher) if target is not None else None
    return {
        "family": f.name, "trials": len(f.trials) if len(f.trials) == f.planned else f"{len(f.trials)}/{f.planned}",
        "chosen_trial": picks[0] if len(set(picks)) == 1 else " / ".join(picks),
        "val": float(np.mean([v[int(np.argmax(g))] for v, g in zip(f.val, f.goodness)])),
        "score": float(curve["expected_test"].iloc[-1]),
        "one_shot": float(curve["expected_test"].iloc[0]), "gain": float(curve["expected_test"].iloc[-1] - curve["expected_test"].iloc[0]),
        "spread": spread, "budget_s": float(np.nansum(f.cost_s)),
    } | ({"trials_to_target": reach if reach is not None else f">{len(f.trials)}"} if target is not None else {})


def _tests(table: pd.DataFrame, replicate: dict[str, np.ndarray], higher: bool) -> None:
    """Interval, p against the best family (Holm), tied_with_best and the MDE, from the joint
    replicates of each family's score at its whole budget."""
    best = table["family"].iloc[0]
    ref = replicate[best][:, -1]
    raw, mde, low, high = [], [], [], []
    for name, score in zip(table["family"], table["score"]):
        mine = replicate[name][:, -1]
        lo, hi = percentile_interval(mine)
        low.append(lo)
        high.append(hi)
        if name == best:
            raw.append(math.nan)
            mde.append(math.nan)
            continue
        diffs = mine - ref
        raw.append(bootstrap_p(score - table["score"].iloc[0], diffs))
        mde.append(mde_from_se(float(np.nanstd(diffs, ddof=1))))
    adjusted = holm(np.array(raw))
    table["score_low"], table["score_high"] = low, high
    table["p_vs_best"] = adjusted
    table["tied_with_best"] = [True if n == best else bool(p >= ALPHA) for n, p in zip(table["family"], adjusted)]
    table["mde_vs_best"], table["p_vs_best_raw"] = mde, raw


def _p_best(curves: pd.DataFrame, replicate: dict[str, np.ndarray], families: list[Family], higher: bool) -> None:
    """p_best: the share of joint replicates in which the family's expected test score of n
    trials is the best, at each budget every family reached (Sivaprasad et al. 2020)."""
    reach = min(len(f.trials) for f in families)
    curves["p_best"] = math.nan
    if len(families) < 2:
        return
    stacked = np.stack([replicate[f.name][:, :reach] for f in families])  # [families, B, n]
    winner = stacked.argmax(axis=0) if higher else stacked.argmin(axis=0)
    for i, f in enumerate(families):
        at = (curves["family"] == f.name) & (curves["n"] <= reach)
        curves.loc[at, "p_best"] = (winner == i).mean(axis=0)[: int(at.sum())]


def _budget_lines(families: list[Family]) -> list[str]:
    counts = {f.name: len(f.trials) for f in families}
    if len(set(counts.values())) <= 1:
        return [f"budgets: equal, {next(iter(counts.values()))} trial(s) per family" if len(counts) > 1 else ""]
    most, least = max(counts, key=counts.get), min(counts, key=counts.get)
    return [f"unequal budgets: {most} had {counts[most]} trials, {least} had {counts[least]}: the comparison favours {most}; "
            f"the tuning curves compare every family at n = {counts[least]} (tuning_curves.csv)"]


def _summary(curves: pd.DataFrame, replicate: dict[str, np.ndarray], families: list[Family], metric: str, higher: bool) -> str:
    """One line: who leads at the largest budget every family reached, by how much, with p; and
    where the lead changes hands."""
    if len(families) < 2:
        return ""
    n_eq = min(len(f.trials) for f in families)
    at = {f.name: float(curves[(curves["family"] == f.name) & (curves["n"] == n_eq)]["expected_test"].iloc[0]) for f in families}
    order = sorted(at, key=at.get, reverse=higher)
    lead, second = order[0], order[1]
    diffs = replicate[lead][:, n_eq - 1] - replicate[second][:, n_eq - 1]
    p = bootstrap_p(at[lead] - at[second], diffs)
    scale, unit = (100, " points") if "acc" in metric or metric.endswith(("f1", "_acc")) else (1, "")
    line = f"at n = {n_eq} trials {lead} leads {second} by {abs(at[lead] - at[second]) * scale:.3g}{unit} of expected test {metric} (p = {p:.3g})"
    ns = curves[curves["family"] == families[0].name]["n"].to_numpy()
    ns = ns[ns <= n_eq]
    changes = tuning.crossovers({f.name: curves[(curves["family"] == f.name) & (curves["n"] <= n_eq)]["expected_test"].to_numpy() for f in families}, ns, higher)
    if changes:
        line += "; " + ", ".join(f"{new} overtakes {old} from n = {n}" for n, new, old in changes)
    else:
        line += f"; the lead holds at every n from 1 to {n_eq}"
    return line

"""The verdict in sentences: what a leaderboard says, in words a reader can forward.

"mlp-wide is best on test_acc, 0.987 [0.971, 0.994]. tudui is not shown different (p = 0.057,
MDE 0.024). mlp and lenet are worse (p < 0.001)." The numbers are the leaderboard's own
(p_vs_best is Holm-corrected, the interval is the table's 95% CI); nothing is computed here.
Printed under the terminal table and first in report.html.
"""
from __future__ import annotations

import math

import pandas as pd

from compare.report.leaderboard import Leaderboard


def sentences(board: Leaderboard) -> list[str]:
    """One sentence for the best model, then one per verdict: models with the same words share it."""
    t, metric = board.table, board.evidence.metric
    if not len(t):
        return []
    best = t.iloc[0]
    value = best.get(f"{metric}_mean")
    if _missing(value):
        return [f"No model has a finite {metric}: no verdict."]
    interval = f" [{_num(best.get(f'{metric}_ci95_low'), metric)}, {_num(best.get(f'{metric}_ci95_high'), metric)}]" if not _missing(best.get(f"{metric}_ci95_low")) else ""
    only = len(t) == 1
    lines = [f"{name(best)} {'is the only model' if only else 'is best'} on {metric}, {_num(value, metric)}{interval}."]
    groups: dict[str, list[str]] = {}  # the verdict's words -> the models it holds for, in rank order
    for _, row in t.iloc[1:].iterrows():
        groups.setdefault(verdict(row, metric, board.evidence.margin), []).append(name(row))
    lines += [f"{_and(models)} {'is' if len(models) == 1 else 'are'} {words}." for words, models in groups.items()]
    return lines


def verdict(row: pd.Series, metric: str, margin: float | None = None) -> str:
    """A model's verdict against the best, with the evidence behind it in brackets; with a
    margin ([report] margin, --margin), equivalence and non-inferiority first (docs/verdict.md)."""
    p, tied, mde = row.get("p_vs_best"), row.get("tied_with_best"), row.get("mde_vs_best")
    if _missing(p) or _missing(tied):
        status = str(row.get("status", ""))
        return f"not tested against the best ({status})" if status in ("failed", "diverged") else "not tested against the best (no paired test)"
    if margin is not None and not _missing(row.get("equivalent_to_best")):
        if bool(row["equivalent_to_best"]):
            return f"equivalent within {margin:g}" + ("" if bool(tied) else f" (different, {p_is(p)}, but by less than the margin)")
        if bool(tied):
            short = f"MDE {_num(mde, metric)} > margin: more evidence needed" if not _missing(mde) and mde > margin else f"not shown within {margin:g}"
            return f"not shown different ({p_is(p)}, {short})"
        if bool(row.get("non_inferior")):
            return f"worse ({p_is(p)}) but non-inferior within {margin:g}"
    if bool(tied):
        mde_words = f", MDE {_num(mde, metric)}" if not _missing(mde) else ""
        return f"not shown different ({p_is(p)}{mde_words})"
    return f"worse ({p_is(p)})"


def name(row: pd.Series) -> str:
    """The model, and its run where the table spans several."""
    run = row.get("run")
    return f"{row['model']} ({run})" if isinstance(run, str) and run else str(row["model"])


def p_is(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _num(v, metric: str) -> str:
    """Accuracies and other fractions to 3 decimals; anything else to 4 significant digits."""
    if _missing(v):
        return "-"
    return f"{v:.3f}" if "acc" in metric or "f1" in metric else f"{v:.4g}"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))

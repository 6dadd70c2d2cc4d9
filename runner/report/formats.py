"""The leaderboard as text: Markdown (with the evidence behind each claim), LaTeX, display strings.

CSV is `Leaderboard.table` as is; these are the human-facing renderings of the same numbers.
"""
from __future__ import annotations

import math

import pandas as pd

from compare.metrics.power import POWER
from compare.metrics.significance import ALPHA
from compare.errors import ReportError, did_you_mean
from compare.report.across import Across
from compare.report.families import FamilyBoard
from compare.report.leaderboard import TEST_ACC, Leaderboard
from compare.report.run_data import RunData


def title(run: RunData) -> str:
    return f"{run.config.get('experiment', {}).get('name') or run.label}: leaderboard"


def _num(v, fmt: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _p(v) -> str:
    if v is None or v is pd.NA or math.isnan(v):
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _si(v) -> str:
    """1340672 -> 1.34M: FLOPs and parameter counts at a glance."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:g}"


def _tied(row) -> str:
    if row["rank"] == 1 and pd.isna(row.get("p_vs_best")):
        return "best"
    value = row.get("tied_with_best")
    return "?" if value is None or value is pd.NA else "yes" if value else "no"


def _verdict(row, column: str) -> str:
    """An equivalence cell: "best" for rank 1, yes / no, "?" where no interval was found."""
    if row["rank"] == 1 and pd.isna(row.get(column)):
        return "best"
    value = row.get(column)
    return "?" if value is None or value is pd.NA else "yes" if value else "no"


def margin_words(e) -> str | None:
    """What equivalent_to_best and non_inferior mean for this table, or None without a margin."""
    if e.margin is None:
        return None
    bad = "below" if e.higher_is_better else "above"
    return (f"equivalent_to_best: the {1 - 2 * ALPHA:.0%} interval of (model - best) in {e.metric} lies within ±{e.margin:g} "
            f"(TOST at alpha {ALPHA}, per comparison); non_inferior: its bound on the bad side is not {bad} {'-' if e.higher_is_better else '+'}{e.margin:g}")


def display(board: Leaderboard, compact: bool = False) -> pd.DataFrame:
    """Formatted strings, one column per claim; `compact` (terminal) drops the less-read ones."""
    t, metric = board.table, board.evidence.metric
    out = pd.DataFrame({"rank": t["rank"].astype(str)})
    if "run" in t:
        out["run"] = t["run"]
    out["model"] = t["model"]
    if "family" in t and t["family"].duplicated().any():  # sweeps and searches: which table each point came from
        out["family"] = t["family"].fillna("-").astype(str)
    if "arch" in t:
        out["arch"] = t["arch"].fillna("-").astype(str)
    if "params" in t:
        out["params"] = [_si(v) for v in t["params"]]
    if "flops_per_sample" in t and not compact:
        out["flops/sample"] = ["n/a" if pd.isna(v) else _si(v) for v in t["flops_per_sample"]]  # n/a: FlopCounterMode could not count it
    accuracy = f"{TEST_ACC}_mean" in t and t[f"{TEST_ACC}_mean"].notna().any()  # a task without classes has none
    names = [metric] if compact else ([TEST_ACC] if accuracy else []) + ([metric] if metric != TEST_ACC else [])
    for name in names:
        fmt = ".4f" if "acc" in name or "loss" in name else ".4g"
        out[f"{name} ± std"] = [f"{_num(m, fmt)} ± {_num(s, fmt)}" if not pd.isna(s) else _num(m, fmt) for m, s in zip(t[f"{name}_mean"], t[f"{name}_std"])]
        out[f"{name} 95% CI"] = [f"[{_num(lo, fmt)}, {_num(hi, fmt)}]" for lo, hi in zip(t[f"{name}_ci95_low"], t[f"{name}_ci95_high"])]
    if not (compact and metric == "test_loss"):
        out["test_loss"] = [_num(v, ".4f") for v in t["test_loss_mean"]]
    out["epoch"] = [f"{e} ({on})" for e, on in zip(t["selected_epoch"], t["selected_on"])]
    out["train_time_s"] = [_num(v, ".1f") for v in t["train_time_s"]]
    out["samples/s"] = [_num(v, ",.0f") for v in t["samples_per_s"]]
    out["status"] = t["status"]
    out["p_vs_best (Holm)"] = [_p(v) for v in t["p_vs_best"]]
    out["tied_with_best"] = [_tied(row) for _, row in t.iterrows()]
    if "equivalent_to_best" in t:  # [report] margin / --margin (docs/verdict.md)
        out["equivalent_to_best"] = [_verdict(row, "equivalent_to_best") for _, row in t.iterrows()]
        out["non_inferior"] = [_verdict(row, "non_inferior") for _, row in t.iterrows()]
        if not compact:
            out["diff vs best 90% CI"] = ["-" if pd.isna(lo) else f"[{lo:+.4g}, {hi:+.4g}]" for lo, hi in zip(t["diff_vs_best_ci90_low"], t["diff_vs_best_ci90_high"])]
    out["mde_vs_best"] = [_num(v, ".3f") for v in t["mde_vs_best"]]
    if not compact or t["seeds_needed"].notna().any():
        out["seeds_needed"] = [_num(v, ".0f") for v in t["seeds_needed"]]
    if not compact:  # the counts behind p: test samples won / lost against the best
        out["wins/losses vs best"] = ["-" if pd.isna(w) else f"{w}/{l}" for w, l in zip(t["wins_vs_best"], t["losses_vs_best"])]
    grads = ["grad_norm_final", "grad_nonfinite"] if compact else ["grad_norm_mean", "grad_norm_max", "grad_norm_final", "grad_nonfinite"]
    for col in grads:
        out[col] = [_num(v, "d" if col == "grad_nonfinite" else ".3g") for v in t[col]]
    if compact:  # the terminal: the claims and their evidence first; the rest is in the files
        keep = [c for c in out.columns if c not in ("arch", "params", "flops/sample", "samples/s")]
        return out[keep].rename(columns=SHORT)
    return out


SHORT = {  # terminal headers; leaderboard.csv has the full column names
    f"{TEST_ACC} 95% CI": "95% CI", "test_loss": "loss",
    "train_time_s": "time s", "p_vs_best (Holm)": "p (Holm)", "tied_with_best": "tied", "grad_norm_final": "grad final",
    "grad_nonfinite": "nonfinite", "mde_vs_best": "MDE", "seeds_needed": "seeds needed",
    "equivalent_to_best": "equiv", "non_inferior": "non-inf",
}


def sort(board: Leaderboard, column: str | None) -> Leaderboard:
    """Re-order rows by a table column (ranks keep their meaning: the metric's order).
    Accuracy-like columns and throughput sort high first; everything else low first."""
    if column is None:
        return board
    if column not in board.table.columns:
        raise ReportError(f"--sort {column!r}: no such column{did_you_mean(column, board.table.columns)}")
    descending = "acc" in column or column in ("samples_per_s", "tied_with_best", "wins_vs_best", "equivalent_to_best", "non_inferior")
    table = board.table.sort_values(column, ascending=not descending, na_position="last", kind="stable").reset_index(drop=True)
    return Leaderboard(table, board.evidence)


def markdown_table(frame: pd.DataFrame, left: tuple[str, ...] = ("model", "run", "arch", "status")) -> str:
    """A DataFrame of display cells as a Markdown table; `left` columns left-aligned."""

    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" if c in left else "---:" for c in frame.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def evidence_lines(board: Leaderboard) -> list[str]:
    """One bullet per claim the table makes, with what backs it."""
    e = board.evidence
    seeds = f"{len(e.seeds)} ({', '.join(map(str, e.seeds))})" if e.seeds else "unknown"
    direction = "higher is better" if e.higher_is_better else "lower is better"
    lines = [
        f"- **Protocol:** {e.protocol}.",
        f"- **Ranking:** `{e.metric}` at the selected epoch, mean over seeds ({direction}); ties broken by test loss.",
        f"- **Seeds:** {seeds}; the whole shared pass is repeated per seed (data order and model initialisation).",
        f"- **Test samples:** {e.test_samples if e.test_samples else 'unknown'}, the same samples in the same order for every model and seed.",
        f"- **95% CI:** {e.interval}.",
    ]
    if e.reference is not None and e.comparisons:
        mcnemar = e.test.startswith("exact McNemar")  # top-1 accuracy, top-k, subset accuracy
        lines.append(
            f"- **p_vs_best:** {e.test}, against **{e.reference}** (rank 1) on the same test samples, "
            f"Holm-corrected over {e.comparisons} comparison(s)."
            if not e.test.startswith("exact McNemar test on top-1") else
            f"- **p_vs_best:** paired test of each model against **{e.reference}** (rank 1) on the same test samples, "
            "on top-1 correctness: per test sample, the number of seeds each "
            "model gets right; exact two-sided sign test "
            "(binomial, 1/2) on the samples where the counts differ. With one seed this is the exact "
            "McNemar test. The test sample is the unit, so seeds scored on the same samples are not "
            f"counted as independent evidence. Holm-corrected over {e.comparisons} comparison(s)."
        )
        lines.append(
            f"- **tied_with_best:** corrected p >= {ALPHA}: the data do not show a difference from the "
            "best (which is not proof that they are equal). `wins_vs_best` / `losses_vs_best` in "
            "leaderboard.csv count the test samples each side wins."
        )
        if not mcnemar:
            lines.append(
                f"- **mde_vs_best:** the smallest difference in `{e.metric}` from the best this evidence resolves at alpha = {ALPHA} "
                f"with {POWER:.0%} power: one seed, (z_0.975 + z_0.8) x the standard error of the paired difference (docs/metrics.md); "
                "several seeds, the paired t-test over the per-seed differences. **seeds_needed:** the seeds that t-test needs to "
                "resolve the observed difference, taking the observed per-seed spread as the truth (inf: no difference seen)."
            )
        else:
            lines.append(
                f"- **mde_vs_best:** the smallest difference in `{e.metric}` from the best this evidence resolves at alpha = {ALPHA} "
                f"with {POWER:.0%} power: one seed, the exact McNemar test at the pair's observed discordance rate on test; "
                "several seeds, the paired t-test over the per-seed differences. **seeds_needed:** the seeds that t-test "
                "needs to resolve the observed difference, taking the observed per-seed spread as the truth (inf: no difference seen)."
            )
        if (words := margin_words(e)) is not None:
            lines.append(f"- **Equivalence (margin {e.margin:g}):** {words}. With one seed the interval is over the test "
                         "samples (paired t on the per-sample differences for a 0/1 metric, else the paired bootstrap's "
                         "percentiles); with several seeds, Student-t over the per-seed differences (docs/verdict.md).")
        tested = "top-1 test predictions" if mcnemar else "per-sample test statistics (docs/metrics.md)"
        lines.append(
            "- **Caveats:** the rank-1 model is picked on the same test set, which favours it slightly; "
            f"intervals over seeds hold the test set fixed; the {tested} of the selected epoch are tested."
        )
    lines += [f"- **Note:** {n}." for n in e.notes]
    return lines


def to_markdown(board: Leaderboard, title: str) -> str:
    parts = [f"# {title}", "", "What backs each claim:", "", *evidence_lines(board), "", markdown_table(display(board)), ""]
    per_seed = board.evidence.per_seed
    if per_seed is not None and len(per_seed):
        frame = pd.DataFrame({
            "model": per_seed["model"],
            "seed": per_seed["seed"].astype(str),
            "only model right": per_seed["only_model_right"].astype(str),
            "only best right": per_seed["only_best_right"].astype(str),
            "exact McNemar p": [_p(v) for v in per_seed["p_mcnemar"]],
        })
        parts += [
            f"## Per seed: exact McNemar against {board.evidence.reference}",
            "",
            "Uncorrected, one seed at a time (scipy.stats.binomtest on the discordant pairs); the "
            "table above combines the seeds per test sample instead of pooling these counts.",
            "",
            markdown_table(frame),
            "",
        ]
    return "\n".join(parts)


def to_latex(board: Leaderboard) -> str:
    """A booktabs tabular of the display columns (pandas Styler; text is LaTeX-escaped)."""
    frame = display(board)
    text = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1).to_latex(hrules=True, column_format="l" * len(frame.columns))
    # Math symbols in math mode: plain-text "±" and "<" need fonts/encodings a paper may not load.
    return text.replace("±", "$\\pm$").replace("<0.001", "$<$0.001")


def to_csv(board: Leaderboard) -> str:
    return board.table.to_csv(index=False)


def evidence_summary(board: Leaderboard) -> list[str]:
    """The evidence in a few plain lines, for the terminal."""
    e = board.evidence
    lines = [e.protocol]
    lines.append(f"{len(e.seeds)} seed(s) ({', '.join(map(str, e.seeds))}); {e.test_samples or 'unknown'} test samples, the same for every model; ranked by {e.metric} at the selected epoch ({'higher' if e.higher_is_better else 'lower'} is better)")
    lines.append(f"95% CI: {e.interval}")
    if e.reference is not None and e.comparisons:
        one = len(e.seeds) == 1
        test = "exact McNemar test" if one else "exact sign test over test samples, seeds combined per sample (McNemar per seed in leaderboard.md)"
        if not e.test.startswith("exact McNemar test on top-1"):
            test = e.test
        lines.append(f"p_vs_best: {test} against {e.reference}, Holm-corrected over {e.comparisons}; tied_with_best: corrected p >= {ALPHA}")
        lines.append(f"MDE: smallest difference from the best this evidence resolves (alpha {ALPHA}, power {POWER:.0%}); seeds needed: for the observed difference")
        if (words := margin_words(e)) is not None:
            lines.append(words)
    return lines + [f"note: {n}" for n in e.notes]


# ---- across datasets (runner/report/across.py): the same three renderings of an Across ----

def _p_is(v) -> str:
    """"p = 0.012" or "p < 0.001"."""
    text = _p(v)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def _groups(a: Across) -> str:
    return "; ".join("{" + ", ".join(g) + "}" for g in a.groups) or "none: every pair differs by at least CD"


def across_display(a: Across) -> pd.DataFrame:
    """model, one "score (rank)" cell per dataset (blank: no score there), average rank, p vs best."""
    t = a.table
    fmt = ".4f" if "acc" in a.metric or "loss" in a.metric else ".4g"
    out = pd.DataFrame({"model": t["model"]})
    for label in a.datasets:
        ranks = t.get(f"rank_{label}", pd.Series(math.nan, index=t.index))
        out[label] = ["" if pd.isna(v) else _num(v, fmt) if pd.isna(r) else f"{_num(v, fmt)} ({r:g})" for v, r in zip(t[label], ranks)]
    out["avg rank"] = [_num(v, ".2f") for v in t["avg_rank"]]
    # "best" only for the model the ranks put first; a model without a score everywhere is "left out", never best
    ranked = len(a.tested) >= 2
    out["p vs best (Wilcoxon, Holm)"] = ["left out" if not tested else "best" if i == 0 and ranked else _p(p) for i, (p, tested) in enumerate(zip(t["p_vs_best"], t["in_test"]))]
    if a.margin is not None:  # the TOST over datasets (docs/verdict.md)
        out[f"equivalent (±{a.margin:g})"] = ["best" if i == 0 and ranked else "?" if pd.isna(v) else "yes" if v else "no" for i, v in enumerate(t["equivalent_to_best"])]
        out["non-inferior"] = ["best" if i == 0 and ranked else "?" if pd.isna(v) else "yes" if v else "no" for i, v in enumerate(t["non_inferior"])]
    return out


def across_evidence(a: Across) -> list[str]:
    """What backs the across-datasets verdict, one bullet per claim."""
    n, k = len(a.datasets), len(a.tested)
    direction = "higher is better" if a.higher_is_better else "lower is better"
    lines = [
        f"- **Verdict:** {a.verdict}.",
        "- **Datasets:** " + "; ".join(f"`{label}` = {what}" for label, what in a.datasets.items()) + ".",
        f"- **Scores:** each run's leaderboard `{a.metric}_mean` (mean over its seeds, {direction}); in brackets the rank on that dataset (1 = best, ties share the average rank).",
    ]
    if a.friedman is not None:
        f = a.friedman
        lines.append(
            f"- **Friedman test** over {n} datasets and {k} models: chi2_F = {f.chi2:.3f} (tie-corrected), {_p_is(f.p)}; "
            f"Iman-Davenport F_F = {f.f:.3f} with ({k - 1}, {(k - 1) * (n - 1)}) df, {_p_is(f.f_p)}. "
            f"The verdict reads F_F (Demšar 2006: chi2_F is too conservative); p >= {a.alpha:g} means the ranks do not show a difference."
        )
    if a.cd is not None:
        lines.append(
            f"- **Nemenyi critical difference:** CD = q_alpha * sqrt(k(k+1)/(6N)) = {a.q:.3f} * sqrt({k}*{k + 1}/(6*{n})) = {a.cd:.3f} at alpha = {a.alpha:g}: "
            "two models whose average ranks differ by at least CD differ significantly (all pairs compared, so it is conservative)."
        )
        lines.append(f"- **Not significantly different (Nemenyi):** {_groups(a)}.")
    if a.cd is not None and a.wilcoxon:
        lines.append(
            "- **p vs best:** two-sided Wilcoxon signed-rank test of each model's scores against the best model's over the datasets "
            f"(zero differences split between the signs), Holm-corrected over {k - 1} comparison(s)."
        )
    if a.margin is not None:
        lines.append(f"- **Equivalence (margin {a.margin:g}):** the {1 - 2 * ALPHA:.0%} Student-t interval of each model's per-dataset differences to the best "
                     f"lies within ±{a.margin:g} (TOST over datasets; `non_inferior`: its bound on the bad side does). It reads score differences, so only where they are comparable across datasets.")
    lines.append("- **Assumptions:** the datasets are independent draws of the problems you care about; ranks, not score differences, carry the evidence (see docs/across-datasets.md).")
    return lines + [f"- **Note:** {note}." for note in a.notes]


def across_markdown(a: Across, title: str) -> str:
    return "\n".join([f"# {title}", "", "What backs each claim:", "", *across_evidence(a), "", markdown_table(across_display(a)), ""])


def across_latex(a: Across) -> str:
    frame = across_display(a)
    text = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1).to_latex(hrules=True, column_format="l" + "r" * (len(frame.columns) - 1))
    return text.replace("<0.001", "$<$0.001")


def across_csv(a: Across) -> str:
    return a.table.to_csv(index=False)


def across_summary(a: Across) -> list[str]:
    """The evidence in a few plain lines, for the terminal."""
    n, k = len(a.datasets), len(a.tested)
    lines = [f"verdict: {a.verdict}", "datasets: " + "; ".join(f"{label} = {what}" for label, what in a.datasets.items())]
    if a.friedman is not None:
        f = a.friedman
        lines.append(f"Friedman over {n} datasets, {k} models: chi2_F = {f.chi2:.3f}, {_p_is(f.p)}; Iman-Davenport F_F = {f.f:.3f}, {_p_is(f.f_p)}")
    if a.cd is not None:
        tested = f"Wilcoxon signed-rank over datasets, Holm-corrected over {k - 1}" if a.wilcoxon else "not tested (see the notes)"
        lines.append(f"Nemenyi critical difference {a.cd:.3f} (alpha {a.alpha:g}, q = {a.q:.3f}); p vs best: {tested}")
        lines.append(f"not significantly different (Nemenyi): {_groups(a)}")
    if a.margin is not None:
        lines.append(f"equivalent: the {1 - 2 * ALPHA:.0%} Student-t interval of the per-dataset differences to the best lies within ±{a.margin:g} (TOST over datasets); non-inferior: its bad-side bound does")
    return lines + [f"note: {note}" for note in a.notes]


# ---- the family verdict (runner/report/families.py) ----

def family_display(board: FamilyBoard) -> pd.DataFrame:
    """One row per family: its chosen trial, score with interval and test, and how much tuning moved it."""
    t, name = board.table, board.metric.removeprefix("test_")
    fmt = ".4f" if "acc" in name or name.endswith("f1") else ".4g"
    out = pd.DataFrame({"rank": t["rank"].astype(str), "family": t["family"], "trials": t["trials"].astype(str), "chosen trial (on val)": t["chosen_trial"]})
    out[f"val_{name}"] = [_num(v, fmt) for v in t[f"val_{name}"]]
    out[f"test_{name}"] = [_num(v, fmt) for v in t[f"test_{name}"]]
    out["95% CI"] = [f"[{_num(lo, fmt)}, {_num(hi, fmt)}]" for lo, hi in zip(t[f"test_{name}_ci95_low"], t[f"test_{name}_ci95_high"])]
    out["p (Holm)"] = [_p(v) for v in t["p_vs_best"]]
    out["tied"] = ["best" if i == 0 else "yes" if v else "no" for i, v in enumerate(t["tied_with_best"])]
    out["MDE"] = [_num(v, ".3f") for v in t["mde_vs_best"]]
    out["one-shot"] = [_num(v, fmt) for v in t["one_shot"]]
    out["gain"] = [_num(v, "+.3f") for v in t["gain"]]
    out["spread"] = [_num(v, ".3f") for v in t["spread"]]
    out["budget s"] = [_num(v, ".1f") for v in t["budget_s"]]
    if "trials_to_target" in t:
        out["trials to target"] = t["trials_to_target"].astype(str)
    return out


def family_markdown(board: FamilyBoard, title: str) -> str:
    name = board.metric.removeprefix("test_")
    legend = (f"one-shot: the expected test {name} of one random trial; gain: what tuning all the trials added to it; "
              "spread: the standard deviation of the trials' test scores (how much the answer depends on tuning); budget: training seconds of all trials")
    return "\n".join([f"# {title}", "", *(f"- {line}" for line in board.lines + [legend]), "", markdown_table(family_display(board), left=("family", "chosen trial (on val)")), ""])

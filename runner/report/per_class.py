"""Per-class precision, recall and F1 of each model, from the top-1 test predictions of the
epoch the leaderboard reports (counts summed over seeds), as a pandas table:
`compare leaderboard RUN --per-class` prints it and plots/per_class.png draws its F1. With it
come the most-confused pairs (plots/confused_pairs.png draws them past 20 classes). For a
multi-label run the same command gives each label's precision, recall, F1 (a score >= 0.5 is
a yes) and average precision; for a regression each output's RMSE, MAE and R² (mean over seeds);
for a dense task each class's IoU, accuracy (pixel recall) and Dice over the test pixels."""
from __future__ import annotations

import numpy as np
import pandas as pd

from compare.errors import ReportError, did_you_mean
from compare.metrics import dense
from compare.metrics.builtin import average_precision_w
from compare.report import stats
from compare.report.run_data import RunData, epoch_stats

# --sort: these read best high (scores, and the bigger classes first); errors and names low first.
HIGH_FIRST = {"precision", "recall", "f1", "ap", "r2", "support", "predicted", "count", "share", "iou", "acc", "dice"}


def per_class(run: RunData, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, class): precision, recall, f1, support (test samples of the class,
    per seed) and predicted (per seed). Empty for a run without classes."""
    if run.task[0] == "regression":
        return per_output(run, order)
    if run.task[0] == "multilabel":
        return per_label(run, order)
    if run.task[0] == "dense":
        return per_class_dense(run, order)
    if run.task[0] != "classification":
        return pd.DataFrame(columns=["model", "class", "precision", "recall", "f1", "support", "predicted"])
    rows = []
    for model in order or run.model_names:
        if (summed := confusion(run, model)) is None:
            continue
        counts, names, n_seeds = summed
        tp, true, pred = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
        with np.errstate(all="ignore"):
            precision, recall = tp / pred, tp / true
            f1 = 2 * tp / (true + pred)
        for c in range(len(names)):
            rows.append({"model": model, "class": names[c], "precision": precision[c], "recall": recall[c], "f1": f1[c],
                         "support": true[c] / n_seeds, "predicted": pred[c] / n_seeds})
    return pd.DataFrame(rows)


def confusion(run: RunData, model: str) -> tuple[np.ndarray, list[str], int] | None:
    """(confusion counts summed over seeds [true, predicted], class names, seeds) at the
    reported epoch; None without top-1 predictions."""
    seeds = run.predictions.get(model, {})
    chosen = [(p["target"], s[0]) for seed, p in seeds.items() if (s := run.selected_predictions(model, seed)) is not None]
    if not chosen:
        return None
    k = max(len(run.classes), max(int(max(t.max(), y.max())) for t, y in chosen) + 1)
    names = run.classes if len(run.classes) == k else [str(c) for c in range(k)]
    return sum(stats.confusion_matrix(t, y, k) for t, y in chosen), names, len(chosen)


def confused_pairs(run: RunData, order: list[str] | None = None, top: int = 10) -> pd.DataFrame:
    """Each model's `top` most frequent mistakes (true class -> predicted class), most first:
    count (test samples per seed) and share (of the true class's samples). What a 100 x 100
    confusion matrix cannot show at a glance."""
    rows = []
    for model in order or run.model_names:
        if run.task[0] != "classification" or (summed := confusion(run, model)) is None:
            continue
        counts, names, n_seeds = summed
        errors = counts.astype(np.float64)
        np.fill_diagonal(errors, 0)
        flat = np.argsort(-errors, axis=None, kind="stable")[:top]
        for t, p in zip(*np.unravel_index(flat, errors.shape)):
            if errors[t, p] > 0:
                rows.append({"model": model, "true": names[t], "predicted": names[p], "count": errors[t, p] / n_seeds,
                             "share": errors[t, p] / max(counts[t].sum(), 1)})
    return pd.DataFrame(rows, columns=["model", "true", "predicted", "count", "share"])


def per_label(run: RunData, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, label) of a multi-label run: precision, recall, f1 (a score >= 0.5
    predicts the label, as micro_f1 decides), counts summed over seeds; ap (average precision,
    sklearn's step-wise definition) the mean over seeds; support and predicted per seed."""
    rows = []
    for model in order or run.model_names:
        kept = [(pred["target"], s["score"]) for pred in run.predictions.get(model, {}).values()
                if "score" in (s := epoch_stats(pred, run.reported_key(pred)))]
        if not kept:
            continue
        truth = [t.reshape(len(t), -1) > 0.5 for t, _ in kept]
        said = [s.reshape(len(s), -1) >= 0.5 for _, s in kept]
        tp = sum((t & p).sum(axis=0) for t, p in zip(truth, said))
        true, pred = sum(t.sum(axis=0) for t in truth), sum(p.sum(axis=0) for p in said)
        ones = np.ones((1, len(kept[0][0])))
        ap = np.mean([[average_precision_w(s.reshape(len(s), -1)[:, j].astype(np.float64), t[:, j], ones)[0] if t[:, j].any() else np.nan
                       for j in range(t.shape[1])] for t, (_, s) in zip(truth, kept)], axis=0)
        width = len(tp)
        names = run.classes if len(run.classes) == width else [str(j) for j in range(width)]
        with np.errstate(all="ignore"):
            precision, recall, f1 = tp / pred, tp / true, 2 * tp / (true + pred)
        for j in range(width):
            rows.append({"model": model, "label": names[j], "precision": precision[j], "recall": recall[j], "f1": f1[j], "ap": ap[j],
                         "support": true[j] / len(kept), "predicted": pred[j] / len(kept)})
    return pd.DataFrame(rows)


def sort_rows(table: pd.DataFrame, column: str | None) -> pd.DataFrame:
    """`--per-class --sort COLUMN`: each model's rows re-ordered (models keep their rank order);
    scores and sizes high first, errors (rmse, mae) and names low first."""
    if column is None or table.empty:
        return table
    if column not in table.columns or column == "model":
        choices = [c for c in table.columns if c != "model"]
        raise ReportError(f"--sort {column!r}: the per-class table has no such column (it has {', '.join(choices)}){did_you_mean(column, choices)}")
    rank = {m: i for i, m in enumerate(dict.fromkeys(table["model"]))}
    high = column in HIGH_FIRST
    keys = table.assign(_model=table["model"].map(rank))
    ordered = keys.sort_values(column, ascending=not high, na_position="last", kind="stable")
    return ordered.sort_values("_model", kind="stable").drop(columns="_model").reset_index(drop=True)


def per_output(run: RunData, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, output) of a regression: rmse, mae, r2 (sklearn's definitions, one
    output at a time), at the reported epoch, averaged over seeds."""
    rows = []
    for model in order or run.model_names:
        per_seed = []
        for pred in run.predictions.get(model, {}).values():
            stats = epoch_stats(pred, run.reported_key(pred))
            if "pred" not in stats:
                continue
            p = stats["pred"].reshape(len(pred["target"]), -1).astype(np.float64)
            y = pred["target"].reshape(len(p), -1).astype(np.float64)
            err = p - y
            sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
            with np.errstate(all="ignore"):
                r2 = np.where(sst > 0, 1 - (err**2).sum(axis=0) / sst, np.where((err**2).sum(axis=0) == 0, 1.0, 0.0))
            per_seed.append(np.stack([np.sqrt((err**2).mean(axis=0)), np.abs(err).mean(axis=0), r2]))
        if per_seed:
            mean = np.mean(per_seed, axis=0)
            rows += [{"model": model, "output": j, "rmse": mean[0, j], "mae": mean[1, j], "r2": mean[2, j]} for j in range(mean.shape[1])]
    return pd.DataFrame(rows)


def per_class_dense(run: RunData, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, class) of a dense task: iou, acc (pixel recall) and dice from the
    per-image counts summed over the test images and seeds (NaN: the class is in neither truth
    nor prediction); support and predicted in pixels per seed."""
    rows = []
    for model in order or run.model_names:
        kept = [s for pred in run.predictions.get(model, {}).values() if all(n in (s := epoch_stats(pred, run.reported_key(pred))) for n in dense.STATS)]
        if not kept:
            continue
        inter, true, said = (sum(s[n].astype(np.float64).sum(axis=0) for s in kept) for n in dense.STATS)
        names = run.classes if len(run.classes) == len(inter) else [str(c) for c in range(len(inter))]
        with np.errstate(all="ignore"):
            iou, acc, dice = inter / (true + said - inter), inter / true, 2 * inter / (true + said)
        rows += [{"model": model, "class": names[c], "iou": iou[c], "acc": acc[c], "dice": dice[c],
                  "support": true[c] / len(kept), "predicted": said[c] / len(kept)} for c in range(len(inter))]
    return pd.DataFrame(rows)

"""Per-class precision, recall and F1 of each model, from the top-1 test predictions of the
epoch the leaderboard reports (counts summed over seeds), as a pandas table:
`compare leaderboard RUN --per-class` prints it and plots/per_class.png draws its F1. For a
regression the same command gives each output's RMSE, MAE and R² (mean over seeds)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from runner.report import stats
from runner.report.run_data import RunData, epoch_stats


def per_class(run: RunData, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, class): precision, recall, f1, support (test samples of the class,
    per seed) and predicted (per seed). Empty for a run without classes."""
    if run.task[0] == "regression":
        return per_output(run, order)
    if run.task[0] != "classification":
        return pd.DataFrame(columns=["model", "class", "precision", "recall", "f1", "support", "predicted"])
    rows = []
    for model in order or run.model_names:
        seeds = run.predictions.get(model, {})
        chosen = [(p["target"], s[0]) for seed, p in seeds.items() if (s := run.selected_predictions(model, seed)) is not None]
        if not chosen:
            continue
        k = max(len(run.classes), max(int(max(t.max(), y.max())) for t, y in chosen) + 1)
        counts = sum(stats.confusion_matrix(t, y, k) for t, y in chosen)
        tp, true, pred = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
        with np.errstate(all="ignore"):
            precision, recall = tp / pred, tp / true
            f1 = 2 * tp / (true + pred)
        names = run.classes if len(run.classes) == k else [str(c) for c in range(k)]
        for c in range(k):
            rows.append({"model": model, "class": names[c], "precision": precision[c], "recall": recall[c], "f1": f1[c],
                         "support": true[c] / len(chosen), "predicted": pred[c] / len(chosen)})
    return pd.DataFrame(rows)


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

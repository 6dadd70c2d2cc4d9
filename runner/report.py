"""The leaderboard: one row per model, best first, built from history.csv with pandas."""
from __future__ import annotations

import pandas as pd

COLUMNS = [
    "rank", "model", "arch", "params", "test_acc", "test_loss", "train_loss", "best_test_acc",
    "best_epoch", "epochs", "seeds", "flops_per_sample", "train_time_s", "samples_per_s", "optimizer", "lr",
    "scheduler", "status", "stopped_at",
]


def leaderboard(history: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """`history`: one row per model, seed and epoch; `models`: one row per model (model, arch,
    params, optimizer, status, ...). Ranked by final test accuracy (mean over seeds), then loss."""
    last = history.groupby(["model", "seed"])["epoch"].transform("max")
    final = history[history["epoch"] == last].groupby("model")
    curve = history.groupby(["model", "epoch"])["test_acc"].mean().reset_index().dropna()  # mean over seeds
    best = curve.loc[curve.groupby("model")["test_acc"].idxmax()].set_index("model")
    per_seed_time = history.groupby(["model", "seed"])["time_s"].sum().groupby("model")
    board = pd.DataFrame({
        "test_acc": final["test_acc"].mean(),
        "test_loss": final["test_loss"].mean(),
        "train_loss": final["train_loss"].mean(),
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "epochs": final["epoch"].max(),
        "seeds": final["seed"].nunique(),
        "train_time_s": per_seed_time.mean(),
        "samples_per_s": history.groupby("model")["train_samples"].sum() / history.groupby("model")["time_s"].sum(),
    }).reset_index()
    board = models.merge(board, on="model", how="right")
    board = board.sort_values(["test_acc", "test_loss"], ascending=[False, True], na_position="last")
    board.insert(0, "rank", range(1, len(board) + 1))
    swept = [c for c in board.columns if c.startswith("sweep.")]  # a sweep's values, for grouping
    return board[[c for c in COLUMNS if c in board.columns] + swept].reset_index(drop=True)

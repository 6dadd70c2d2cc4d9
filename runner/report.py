"""The leaderboard: one row per model, best first, built from history.csv with pandas."""
from __future__ import annotations

import pandas as pd

COLUMNS = [
    "rank", "model", "arch", "params", "test_acc", "test_loss", "train_loss", "best_test_acc",
    "best_epoch", "epochs", "train_time_s", "samples_per_s", "optimizer", "lr", "seed", "status",
]


def leaderboard(history: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """`history`: one row per model per epoch; `models`: one row per model (model, arch,
    params, optimizer, seed, status). Ranked by final test accuracy, then final test loss."""
    ordered = history.sort_values(["model", "epoch"])
    final = ordered.groupby("model").tail(1).set_index("model")
    by_model = ordered.groupby("model")
    best_idx = by_model["test_acc"].idxmax()
    board = pd.DataFrame({
        "test_acc": final["test_acc"],
        "test_loss": final["test_loss"],
        "train_loss": final["train_loss"],
        "best_test_acc": by_model["test_acc"].max(),
        "best_epoch": ordered.loc[best_idx.dropna(), ["model", "epoch"]].set_index("model")["epoch"],
        "epochs": final["epoch"],
        "train_time_s": by_model["time_s"].sum(),
        "samples_per_s": by_model["train_samples"].sum() / by_model["time_s"].sum(),
        "lr": final["lr"],
    }).reset_index()
    board = models.merge(board, on="model", how="right")
    board = board.sort_values(["test_acc", "test_loss"], ascending=[False, True], na_position="last")
    board.insert(0, "rank", range(1, len(board) + 1))
    swept = [c for c in board.columns if c.startswith("sweep.")]  # a sweep's values, for grouping
    return board[[c for c in COLUMNS if c in board.columns] + swept].reset_index(drop=True)

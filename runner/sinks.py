"""Where epoch records go: history.csv (pandas) and one TensorBoard run per model.

Both flush every epoch, so a crash loses at most the epoch in progress.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

# history.csv column -> TensorBoard tag; the same tags for every model so runs overlay.
TB_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "grad_norm_mean": "grad_norm/mean",
    "grad_norm_max": "grad_norm/max",
    "lr": "lr",
    "samples_per_s": "throughput/samples_per_s",
}


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


class HistorySink:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "history.csv"
        self.rows: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.rows += records
        write_csv_atomic(self.frame(), self.path)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        first = ["model", "seed", "epoch"]
        return frame[first + [c for c in frame.columns if c not in first]]

    def close(self) -> None:
        pass


class TensorBoardSink:
    def __init__(self, tb_dir: Path, model_names: list[str]):
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - imports tensorboard

        self.writers = {name: SummaryWriter(log_dir=str(Path(tb_dir) / name)) for name in model_names}

    def write(self, records: list[dict]) -> None:
        for record in records:
            writer = self.writers[record["model"]]
            for column, tag in TB_TAGS.items():
                writer.add_scalar(tag, record[column], global_step=record["epoch"])
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

"""Where epoch records go: history.csv (pandas) and one TensorBoard run per model.

Both flush every epoch, so a crash loses at most the epoch in progress.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from compare import atomic
from compare.atomic import write_csv  # by name: tests patch sinks.write_csv to fill the disk
from compare.metrics.heads import kept_target  # several heads: each head's target is one of its statistics
from compare.rundir import layout
from compare.rundir.guard import check_no_links
from compare.rundir.integrity import write_checksum

# history.csv column -> TensorBoard tag; the same tags for every model so runs overlay.
TB_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "val_loss": "loss/val",
    "val_acc": "accuracy/val",
    "test_acc": "accuracy/test",
    "grad_norm_mean": "grad_norm/mean",
    "grad_norm_max": "grad_norm/max",
    "lr": "lr",
    "samples_per_s": "throughput/samples_per_s",
}
# TensorBoard's time-series view groups tags by their first path part, groups in sorted order,
# and opens the first two: this prefix sorts after every scalar group (accuracy ... throughput),
# so the curves come first and the per-parameter histograms last.
GRADIENT_HISTOGRAMS = "weight_grad"


def metric_tags(record: dict) -> dict[str, str]:
    """The task's metrics (val_<m>, test_<m> columns beyond the fixed ones) as <m>/val, <m>/test."""
    return {c: f"{c.split('_', 1)[1]}/{c.split('_', 1)[0]}" for c in record if (c.startswith(("val_", "test_")) or c.startswith("train_") and "/" in c) and c not in TB_TAGS and isinstance(record[c], float)}


def lr_tags(record: dict) -> dict[str, str]:
    """Each `param_groups` entry's lr (`lr[head.*]`) as lr/<globs>, in the `lr` chart beside the
    default group's; characters TensorBoard refuses in a tag become _ (lr[a.*,b.*] -> lr/a._b)."""
    return {c: "lr/" + (re.sub(r"[^-\w.]+", "_", c[3:-1]).strip("._") or "group") for c in record if c.startswith("lr[") and c.endswith("]")}


class HistorySink:
    def __init__(self, run_dir: Path, rows: list[dict] | None = None, write_file: bool = True):
        self.path = Path(run_dir) / layout.HISTORY
        self.rows: list[dict] = list(rows or [])  # restored from a checkpoint on resume
        self.write_file = write_file  # False on DDP ranks > 0: they keep the rows, rank 0 writes

    def write(self, records: list[dict]) -> None:
        self.rows += records
        if self.write_file:
            write_csv(self.path, self.frame())

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        if frame.empty:
            return frame
        first = ["model", "seed", "epoch"]
        return frame[first + [c for c in frame.columns if c not in first]]


class TensorBoardSink:
    """`runs` maps model name -> run directory name under tb/ (e.g. "mlp" or "mlp/seed_1")."""

    def __init__(self, tb_dir: Path, runs: dict[str, str], purge_step: int | None = None):
        """`purge_step`: on resume, TensorBoard hides events from this epoch on that an
        interrupted process wrote after its last checkpoint."""
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - imports tensorboard

        self.writers = {name: SummaryWriter(log_dir=str(Path(tb_dir) / run), purge_step=purge_step) for name, run in runs.items()}

    def write(self, records: list[dict]) -> None:
        for record in records:
            writer = self.writers[record["model"]]
            for column, tag in TB_TAGS.items() | metric_tags(record).items() | lr_tags(record).items():
                if not ((column.startswith(("val_", "lr")) or column.endswith("_acc")) and math.isnan(record[column])):  # no val split, no classes, no default group: no curve
                    writer.add_scalar(tag, record[column], global_step=record["epoch"])
            writer.flush()

    def write_gradients(self, name: str, epoch: int, model: nn.Module) -> None:
        """Histogram of each parameter's gradient from the epoch's last step."""
        writer = self.writers[name]
        for param_name, param in model.named_parameters():
            if param.grad is not None and torch.isfinite(param.grad).all():
                writer.add_histogram(f"{GRADIENT_HISTOGRAMS}/{param_name}", param.grad.detach().float().cpu(), global_step=epoch)
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class NullTensorBoardSink:
    """What DDP ranks > 0 write to TensorBoard: nothing (one event file per model, rank 0's)."""

    def write(self, records: list[dict]) -> None:
        pass

    def write_gradients(self, name: str, epoch: int, model: nn.Module) -> None:
        pass

    def close(self) -> None:
        pass


def write_predictions(run_dir: Path, model: str, seed: int, targets: torch.Tensor, final: tuple, best: tuple | None, reported: str = "final") -> Path:
    """predictions/<model>/seed_<seed>.npz, plain arrays (read with np.load(..., allow_pickle=False);
    docs/metrics.md has the format): `target`; per selected epoch (`final`, and with a val split
    `best_val`, the best epoch on val) its epoch (`final_epoch`), its top-1 classes where the task
    has classes (`final`), and every per-sample statistic the metrics need (`final.<stat>`);
    `reported` names the one the run's leaderboard reads ([report] select). Nothing here is
    chosen on test."""
    path = layout.predictions_file(run_dir, model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"target": kept_target(targets).numpy(), "reported": np.array(reported)}  # which epoch's arrays the run's leaderboard reads
    for key, chosen in (("final", final), ("best_val", best)):
        if chosen is None:
            continue
        epoch, kept = chosen
        arrays[f"{key}_epoch"] = np.int64(epoch)
        arrays |= {f"{key}.{stat}": value.numpy() for stat, value in kept.items() if stat != "target"}
        if "top1" in kept:
            arrays[key] = kept["top1"].numpy().astype(np.int64)
    with atomic.atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    write_checksum(path)  # seed_<s>.npz.sha256: a changed value in a valid npz fails it
    return path


def weights_state(module: nn.Module) -> dict:
    """What a weights file holds: the state_dict on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def write_weights(run_dir: Path, model: str, seed: int | None, which: str, module: nn.Module | dict) -> Path:
    """models/<model>/<which>.pt (models/<model>/seed_<s>/<which>.pt with several seeds): the
    state_dict on the CPU (`module`, or its `weights_state`), written atomically, with its sha256
    beside it (<which>.pt.sha256); load it with torch.load(..., weights_only=True)."""
    path = layout.weights_file(run_dir, model, seed, which)
    check_no_links(path, Path(run_dir))  # never through a link planted in the run directory
    path.parent.mkdir(parents=True, exist_ok=True)
    state = module if isinstance(module, dict) else weights_state(module)
    with atomic.atomic_write(path) as f:
        torch.save(state, f)
    write_checksum(path)
    return path

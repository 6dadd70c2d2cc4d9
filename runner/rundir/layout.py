"""Every name in a run directory, in one place: the files and folders a run writes, and the
paths of a model's per-seed files. Writers (runner/run/) and readers (runner/report/) both take
their names from here; docs/run-directory.md describes the same layout for people."""
from __future__ import annotations

import re
from pathlib import Path

# Top-level files
CONFIG = "config.toml"  # the resolved config, written first (resume reads it)
ENV = "env.json"  # versions, machine, command, placement
MODELS_CSV = "models.csv"  # one row per model: arch, params, family, sweep values
HISTORY = "history.csv"  # one row per model, seed and epoch
LEADERBOARD_CSV, LEADERBOARD_MD = "leaderboard.csv", "leaderboard.md"
FAMILIES_CSV, FAMILIES_MD = "families.csv", "families.md"  # [report] by = "family"
TUNING_CURVES = "tuning_curves.csv"
REPORT_HTML = "report.html"  # the whole verdict in one self-contained page (runner/report/html.py)
VAL_INDICES = "val_indices.csv"  # the held-out train indices, one per row
SHARD = "shard.json"  # written only by a shard (--shard I/N)

# Top-level folders
TB = "tb"  # one TensorBoard run per model (and seed)
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions"  # predictions/<model>/seed_<s>.npz
ERRORS = "errors"  # errors/<model>.txt: why a model stopped
PLOTS = "plots"
WEIGHTS = "models"  # models/<model>/[seed_<s>/]final.pt, best_val.pt
SHARDS = ".shards"  # --place models: each rank's shard (shard_folder), merged by rank 0
LOOKS = "looks"  # .shards/looks/seed-<s>/epoch-<e>/rank-<r>.pt: a rank's live models at a race look
MARKER, LOCK = ".compare-run", ".lock"  # compare's claim on the directory (runner/rundir/guard.py)

# Inside checkpoints/
CHECKPOINT, CHECKPOINT_NEXT, CHECKPOINT_PREV = "checkpoint.pt", "checkpoint.next.pt", "checkpoint.prev.pt"
MANIFEST = "manifest.json"

# Kept weights (models/<model>/...): the final epoch's, and the best epoch's on val
FINAL, BEST_VAL = "final.pt", "best_val.pt"
WEIGHTS_FILES = {"final": FINAL, "best_val": BEST_VAL}  # the epoch ([report] select's values) -> its file
CHECKSUM_SUFFIX = ".sha256"  # <file>.sha256 beside each kept output (runner/rundir/integrity.py)

# Plots (plots/...): runner/report/plots.py draws them, each only where the run has what it needs
LEARNING_CURVES_PNG, GRAD_NORMS_PNG, LEADERBOARD_PNG = "learning_curves.png", "grad_norms.png", "leaderboard.png"
PARETO_PARAMS_PNG, PARETO_TRAIN_TIME_PNG = "pareto_params.png", "pareto_train_time.png"
CONFUSION_PNG, CALIBRATION_PNG, PER_CLASS_PNG = "confusion_matrices.png", "calibration.png", "per_class.png"  # classification
CONFUSED_PAIRS_PNG = "confused_pairs.png"  # classification past 20 classes: the most-confused pairs
REGRESSION_PNG = "regression.png"  # regression
SEGMENTATION_PNG = "segmentation.png"  # dense: the first test images, truth and each model's mask (per_class.png: IoU)
TUNING_CURVES_PNG = "tuning_curves.png"  # [report] by = "family"
CRITICAL_DIFFERENCE_PNG = "critical_difference.png"  # several runs (`compare plot --out`), not in a run directory


def head_png(name: str, head: str) -> str:
    """Several heads: one head's plot (`confusion_matrices.digit.png`); a head name unsafe in a
    file name is written with its unsafe characters as `_`."""
    stem = name.removesuffix(".png")
    return f"{stem}.{re.sub(r'[^A-Za-z0-9_-]', '_', head)}.png"

RUN_FILES = frozenset({CONFIG, ENV, MODELS_CSV, HISTORY, LEADERBOARD_CSV, LEADERBOARD_MD, VAL_INDICES, REPORT_HTML})
RUN_FOLDERS = frozenset({TB, CHECKPOINTS, PREDICTIONS, ERRORS, PLOTS, WEIGHTS})
SHARDED = frozenset({SHARD, SHARDS})  # written only by a shard or by --place models

SEED_PREFIX, PREDICTIONS_SUFFIX = "seed_", ".npz"  # seed_<s>/ (models/, tb/ with several seeds), seed_<s>.npz


def seed_folder(seed: int) -> str:
    return f"{SEED_PREFIX}{seed}"


def predictions_file(run_dir: str | Path, model: str, seed: int) -> Path:
    return Path(run_dir) / PREDICTIONS / model / f"{seed_folder(seed)}{PREDICTIONS_SUFFIX}"


def predictions_seed(file: Path) -> int | None:
    """The seed of predictions/<model>/seed_<s>.npz; None for any other file in that folder
    (e.g. a half-written seed_0.tmp.npz)."""
    if file.suffix != PREDICTIONS_SUFFIX or not file.stem.startswith(SEED_PREFIX):
        return None
    stem = file.stem.removeprefix(SEED_PREFIX)
    return int(stem) if stem.lstrip("-").isdigit() else None


def weights_folder(run_dir: str | Path, model: str, seed: int | None = None) -> Path:
    """models/<model>/, or models/<model>/seed_<s>/ when the run has several seeds."""
    folder = Path(run_dir) / WEIGHTS / model
    return folder / seed_folder(seed) if seed is not None else folder


def weights_file(run_dir: str | Path, model: str, seed: int | None, which: str) -> Path:
    """models/<model>/[seed_<s>/]final.pt or best_val.pt: `which` is "final" or "best_val"."""
    return weights_folder(run_dir, model, seed) / WEIGHTS_FILES[which]


def checksum_file(path: str | Path) -> Path:
    """The sha256 beside a kept output: final.pt -> final.pt.sha256, seed_0.npz -> seed_0.npz.sha256."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def error_file(run_dir: str | Path, model: str) -> Path:
    return Path(run_dir) / ERRORS / f"{model}.txt"


def shard_folder(run_dir: str | Path, index: int, count: int) -> Path:
    """.shards/shard-<i>-of-<n>: one rank's share of a --place models run, a run directory itself."""
    return Path(run_dir) / SHARDS / f"shard-{index}-of-{count}"


def tb_run(model: str, seed: int | None = None) -> str:
    """A model's TensorBoard run under tb/: <model>, or <model>/seed_<s> with several seeds."""
    return f"{model}/{seed_folder(seed)}" if seed is not None else model


SEEDS_BAND = "mean_over_seeds"  # tb/<model>/mean_over_seeds: with several seeds, the mean and its band


def tb_band_run(model: str) -> str:
    """A model's mean-over-seeds TensorBoard run under tb/, beside its seed_<s> runs."""
    return f"{model}/{SEEDS_BAND}"

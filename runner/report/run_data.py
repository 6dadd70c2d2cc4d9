"""Read a finished (or interrupted) run directory: the only input of every report.

Reports never look at live training state, so `compare leaderboard` and `compare plot`
give the same answer on any run directory as `compare run` gave at the end of the run.
"""
from __future__ import annotations

import json
import re
import shlex
import tomllib
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from compare.errors import ReportError, RunDirError, clip
from compare.rundir import integrity, layout
from compare.metrics.builtin import HEADLINE, split_column

SHARD_SUFFIX = re.compile(r"\.shard-\d+-of-\d+$")  # runner/run/shards.py's default run directory suffix
PREDICTION_KEYS = ("target", "final", "final_epoch", "best_val", "best_val_epoch")  # plus <key>.<stat> per metric statistic


@dataclass
class RunData:
    path: Path
    history: pd.DataFrame  # one row per model, seed and epoch
    models: pd.DataFrame  # one row per model: arch, params, flops_per_sample, optimizer, ...
    env: dict  # env.json: test_samples, classes, versions
    config: dict  # config.toml as plain data ({} when absent)
    # model -> seed -> {"target", "final", "best_val": int arrays, "final_epoch", "best_val_epoch": int}
    predictions: dict[str, dict[int, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # damaged prediction files, one line each
    shards: list[Path] = field(default_factory=list)  # several shards' directories read as one run (load_runs)

    @property
    def label(self) -> str:
        return SHARD_SUFFIX.sub("", self.path.name) if self.shards else self.path.name

    @property
    def model_names(self) -> list[str]:
        """In config order (models.csv), then any model only history knows."""
        names = list(self.models["model"]) if "model" in self.models else []
        return names + [m for m in self.history["model"].unique() if m not in names]

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.history["seed"].unique())

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.env.get("classes") or []]

    def selected_predictions(self, model: str, seed: int) -> tuple[np.ndarray, int] | None:
        """(test predictions, epoch) at the epoch the leaderboard reports: the final one, or
        the best on val with `report.select = "best_val"`; None without saved predictions."""
        pred = self.predictions.get(model, {}).get(seed)
        if pred is None or "final" not in pred:  # no classes (regression, multi-label): no top-1 predictions
            return None
        key = self.reported_key(pred)
        return pred[key], int(pred.get(f"{key}_epoch", 0))

    def reported_key(self, pred: dict) -> str:
        """Which epoch's arrays of a predictions file the leaderboard reads: "best_val" where the
        run reports the best epoch on val and the file holds it, else "final"."""
        return "best_val" if self.config.get("report", {}).get("select") == "best_val" and "best_val_epoch" in pred else "final"

    @property
    def task(self) -> tuple[str, int | None]:
        """(kind, width) from env.json; a run from before tasks were recorded is classification."""
        task = self.env.get("task")
        if task:
            return task["kind"], task.get("width")
        return "classification", len(self.classes) or None

    @property
    def rank_by(self) -> str:
        """The history column the run ranks by: test_<[report] rank_by>, else test_acc."""
        rank = self.config.get("report", {}).get("rank_by") or self.env.get("rank_by") or HEADLINE
        return rank if rank.startswith(("test_", "val_", "train_")) or rank in self.history else split_column("test", rank)

    @property
    def test_samples(self) -> int | None:
        n = self.env.get("test_samples")
        if n:
            return int(n)
        for seeds in self.predictions.values():
            for pred in seeds.values():
                return len(pred["target"])
        return None


def epoch_stats(pred: dict, key: str) -> dict[str, np.ndarray]:
    """The per-sample statistics a predictions file holds for one epoch ("final" or "best_val")."""
    stats = {k.split(".", 1)[1]: v for k, v in pred.items() if k.startswith(key + ".")}
    if "top1" not in stats and key in pred:  # a file from before per-sample statistics: top-1 only
        stats["top1"] = pred[key]
    return stats


def run_labels(runs: list[RunData]) -> list[str]:
    """One name per run in a multi-run table: its folder name, or its path where two runs share
    a folder name."""
    labels = [r.label for r in runs]
    return labels if len(set(labels)) == len(labels) else [str(r.path) for r in runs]


# ---- what differs between several runs, besides their models (leaderboard and across) ----

# [data] keys that change how batches are loaded, not which samples a model learns and is tested on.
LOADER_KEYS = {"batch_size", "eval_batch_size", "num_workers", "cache", "disk_cache", "download"}


def data_settings(run: RunData) -> dict:
    """The run's [data] table without the loader knobs: what makes its dataset what it is."""
    return {k: v for k, v in run.config.get("data", {}).items() if k not in LOADER_KEYS}


def describe_data(runs: list[RunData]) -> list[str]:
    """Per run: the dataset name plus the [data] settings that differ between the runs; `root`
    only where the rest would read the same (it is a path on this machine, not a property of the data)."""
    datas = [data_settings(r) for r in runs]
    keys = sorted({k for d in datas for k in d} - {"dataset"})
    varying = [k for k in keys if len({repr(d.get(k)) for d in datas}) > 1]

    def words(shown: list[str]) -> list[str]:
        return [", ".join([str(d.get("dataset", "?")), *(f"{k}={d[k]}" for k in shown if k in d)]) for d in datas]

    short, full = words([k for k in varying if k != "root"]), words(varying)
    return [f if short.count(s) > 1 else s for s, f in zip(short, full)]


def task_words(run: RunData) -> str:
    """The run's task as the dry-run plan names it (runner/metrics/tasks.py Task.describe; no torch here)."""
    return _task_words(*run.task)


def _task_words(kind: str, width) -> str:
    if kind == "heads":  # width: (head, kind, width) per head
        return f"{len(width)} heads: " + "; ".join(f"{h}: {_task_words(k, w)}" for h, k, w, *_ in width)
    if kind == "classification":
        return "binary classification" if width == 2 else f"{width}-class classification" if width else "classification"
    if kind == "multilabel":
        return f"multi-label classification ({width} labels)"
    return f"regression ({width} output{'s' if width != 1 else ''})" if kind == "regression" else kind


def loss_words(run: RunData) -> str:
    """The run's shared loss: `CrossEntropyLoss`, `CrossEntropyLoss(label_smoothing=0.1)`."""
    loss = run.config.get("loss", {})
    args = ", ".join(f"{k}={v!r}" for k, v in sorted((loss.get("args") or {}).items()))
    return f"{loss.get('name', '?')}({args})" if args else str(loss.get("name", "?"))


def differences(runs: list[RunData], data: bool = True) -> dict[str, list[str]]:
    """What differs between the runs besides their models: "task", "loss" and (with `data`)
    "data", each with one description per run; empty where the runs agree. A run written
    before config.toml held these (no [loss] table) is not counted as differing."""
    described = {"task": [task_words(r) for r in runs], "loss": [loss_words(r) for r in runs]}
    if data:
        described["data"] = describe_data(runs) if len({repr(sorted(data_settings(r).items())) for r in runs}) > 1 else [""] * len(runs)
    if not all(r.config.get("loss") for r in runs):
        described.pop("loss")
    return {what: words for what, words in described.items() if len(set(words)) > 1}


def differences_line(labels: list[str], differ: dict[str, list[str]], metric: str = "") -> str | None:
    """One footer line naming what differs between the runs, or None; a loss `metric` is
    flagged where the runs' losses differ."""
    if not differ:
        return None
    parts = [f"{what} ({'; '.join(f'{label}: {w}' for label, w in zip(labels, words))})" for what, words in differ.items()]
    loss = f": {metric} is not the same quantity in each run" if metric.endswith("loss") and "loss" in differ else ""
    return "the runs differ in " + ", ".join(parts) + loss


def one_task(runs: list[RunData]) -> dict[str, list[str]]:
    """`differences` of runs merged into one leaderboard; runs of different task kinds are
    refused (accuracy next to RMSE, cross-entropy next to MSE: no one order means anything)."""
    differ = differences(runs)
    if len({r.task[0] for r in runs}) > 1:
        each = "; ".join(f"{label}: {words}" for label, words in zip(run_labels(runs), differ["task"]))
        raise ReportError(f"the runs pose different tasks ({each}): one leaderboard cannot rank their models together; report each run by itself")
    return differ


def load_run(path: str | Path) -> RunData:
    """Read RUN_DIR; a missing or unreadable file is a RunDirError naming the path."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    started = (path / layout.CONFIG).exists()  # a run that stopped before its first epoch ended
    if started and not (path / layout.HISTORY).exists():
        raise RunDirError(no_epoch_yet(path))
    history = _read_csv(path / layout.HISTORY, required=("model", "seed", "epoch"))
    if history.empty:
        raise RunDirError(no_epoch_yet(path))
    history["model"] = history["model"].astype(str)
    models_path = path / layout.MODELS_CSV
    models = _read_csv(models_path, required=("model",)) if models_path.exists() else pd.DataFrame({"model": history["model"].unique()})
    models["model"] = models["model"].astype(str)
    env = _read_json(path / layout.ENV)
    config = _read_toml(path / layout.CONFIG)
    predictions, notes = _read_predictions(path / layout.PREDICTIONS)
    return RunData(path, history, models, env, config, predictions, notes)


def load_runs(paths) -> list[RunData]:
    """Each run directory read (load_run); the directories of shards of one sharded run
    (`compare run --shard`: env.json's `shard`, same config and count) read as ONE run, in the
    place of its first shard. A lone shard stays a run of its own models."""
    runs, groups, order = [load_run(p) for p in paths], {}, []
    for run in runs:
        shard = run.env.get("shard")
        key = (shard.get("config_sha256"), shard.get("count")) if isinstance(shard, dict) else id(run)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(run)
    return [groups[k][0] if len(groups[k]) == 1 else combine_shards(groups[k]) for k in order]


def combine_shards(runs: list[RunData]) -> RunData:
    """Several shards' runs as one: rows in the unsharded run's order (seed, epoch, config
    order), one note naming any shard not given. `compare merge` writes such a run to disk."""
    runs = sorted(runs, key=lambda r: r.env["shard"]["index"])
    indices = [r.env["shard"]["index"] for r in runs]
    count = runs[0].env["shard"]["count"]
    if len(set(indices)) != len(indices):
        twice = next(i for i in indices if indices.count(i) > 1)
        raise RunDirError(f"shard {twice}/{count} given twice: {', '.join(str(r.path) for r in runs if r.env['shard']['index'] == twice)}")
    order = [m.get("name") for m in runs[0].config.get("model", [])]
    position = {name: i for i, name in enumerate(order)}
    history = pd.concat([r.history for r in runs], ignore_index=True)
    seeds = {s: i for i, s in enumerate(runs[0].config.get("experiment", {}).get("seeds") or sorted(history["seed"].unique()))}
    keys = pd.DataFrame({"s": history["seed"].map(seeds), "e": history["epoch"], "m": history["model"].map(position)})
    history = history.loc[keys.sort_values(["s", "e", "m"], kind="stable").index].reset_index(drop=True)
    models = pd.concat([r.models for r in runs], ignore_index=True)
    models = models.loc[models["model"].map(position).sort_values(kind="stable").index].reset_index(drop=True)
    env = {k: v for k, v in runs[0].env.items() if k != "shard"}
    predictions = {m: seeds for r in runs for m, seeds in r.predictions.items()}
    notes = [n for r in runs for n in r.notes]
    missing = [i for i in range(1, count + 1) if i not in indices]
    if missing:
        notes.append(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} not given: their models are not in this table")
    return RunData(runs[0].path, history, models, env, runs[0].config, predictions, notes, shards=[r.path for r in runs])


def no_epoch_yet(path: Path) -> str:
    resume = "; `compare resume " + shlex.quote(str(path)) + "` goes on from its checkpoint" if (path / layout.CHECKPOINTS).is_dir() else ""
    return f"{path}: no finished epoch yet, so nothing to report (the run stopped during its first epoch){resume}"


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        raise RunDirError(f"{path.parent}: not a run directory (no {path.name})")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise RunDirError(f"{path}: cannot read: {err}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path}: cannot read: {err}") from None


def _read_toml(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, RecursionError, tomllib.TOMLDecodeError) as err:  # a damaged or planted file: exit 2
        raise RunDirError(f"{path}{' (a symbolic link to ' + str(path.resolve()) + ')' if path.is_symlink() else ''}: cannot read: {clip(str(err), 120)}") from None


def read_prediction_file(path: Path) -> dict:
    """One predictions/<model>/seed_<s>.npz as plain arrays; a RunDirError says why it cannot be
    read (truncated, not a zip, a member whose CRC fails, arrays missing) or trusted (it fails the
    sha256 beside it: a value changed in a valid npz, runner/rundir/integrity.py)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            pred = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise RunDirError(f"{type(err).__name__}: {clip(str(err), 80)}") from None
    if "target" not in pred or not ("final" in pred or "final_epoch" in pred):
        raise RunDirError("expected arrays 'target' and 'final_epoch'")
    if (why := integrity.mismatch(path)) is not None:
        raise RunDirError(why)
    return pred


def prediction_damage(path: Path) -> str | None:
    """Why `path` cannot be read as a prediction file, or None."""
    try:
        read_prediction_file(path)
    except RunDirError as err:
        return f"damaged ({err})"
    return None


def _read_predictions(folder: Path) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """Every model's predictions by seed, and one note per damaged file: a model with one is
    left out of the paired tests (its other seeds alone would be weaker evidence, silently)."""
    out: dict[str, dict[int, dict]] = {}
    notes: list[str] = []
    if not folder.is_dir():
        return out, notes
    for model_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(model_dir.iterdir()):
            seed = layout.predictions_seed(file)
            if seed is None:
                continue  # e.g. a half-written seed_0.tmp.npz
            try:
                out.setdefault(model_dir.name, {})[seed] = read_prediction_file(file)
            except RunDirError as err:
                notes.append(f"{clip(str(file), 120)} is damaged ({err}): no paired test for {model_dir.name}; `compare resume` rebuilds it where the checkpoint holds it")
                out[model_dir.name] = {}
                break
    return {m: seeds for m, seeds in out.items() if seeds}, notes

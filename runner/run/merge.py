"""`compare merge SHARD_DIR... --out RUN`: the shards of one comparison (runner/run/shards.py)
glued into ONE run directory, as the unsharded run would have written it.

Checked first, each a RunDirError (exit 2) naming what is wrong: every directory is a shard's,
all hold the same resolved config (config.toml; the first differing key is named) and the same
assignment, every shard 1..N is there exactly once, and each one finished (its checkpoint
manifest vouches for a final checkpoint). Then, under the run-directory rules of
runner/rundir/guard.py (a fresh directory, or one of compare's with --overwrite):

    config.toml, val_indices.csv      copied (the same in every shard)
    env.json                          the first shard's, with `merged_from` instead of `shard`
    models.csv                        every shard's rows, cell for cell, in config order
    history.csv                       the shards' epoch rows from their final checkpoints, in the
                                      unsharded run's order (seed, epoch, config order), written
                                      by the run's own HistorySink
    predictions/, models/, tb/<model>/, errors/    each model's files, copied byte for byte; a
                                      prediction or weights file that is missing, damaged or fails
                                      the sha256 beside it is rebuilt from the shard's final
                                      checkpoint (a note each), or, where that holds no copy, the
                                      merge is refused before anything is written
    checkpoints/                      one final checkpoint holding the merged state, so
                                      `compare resume RUN` finds a finished run, as for any run
    leaderboard.*, plots/, TB views   runner/report/finalize.py, as at the end of a run
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from compare import atomic
from compare.errors import RunDirError
from compare.report.finalize import finalize_run
from compare.run.checkpoint import Checkpointer, recorded_base_dir
from compare.engine.dist import Dist
from compare.run.experiment import config_differences
from compare.rundir import layout
from compare.rundir.guard import check_no_links, claim_run_dir
from compare.run.shards import Shard, read_shard
from compare.run.predictions import repair_predictions
from compare.run.sinks import HistorySink
from compare.run.weights import kept_weights, repair_weights
from compare.report.run_data import prediction_damage
from compare.rundir.integrity import damage

COPIED = (layout.PREDICTIONS, layout.WEIGHTS, layout.TB)  # <folder>/<model>/... per model


@dataclass
class ShardDir:
    path: Path
    shard: Shard
    config: dict
    config_text: str

    @property
    def name(self) -> str:
        return f"shard {self.shard.label} ({self.path})"


def read_shards(dirs: list[Path]) -> list[ShardDir]:
    """Each directory's shard record and config, checked to be one complete sharded run; in
    shard order."""
    shards = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise RunDirError(f"{d}: no such shard directory")
        shard = read_shard(d)
        if shard is None or not shard.models:
            raise RunDirError(f"{d} is not a shard's run directory (no {layout.SHARD} naming its models); give the directories `compare run --shard I/N` wrote")
        try:
            text = (d / layout.CONFIG).read_text()
            shards.append(ShardDir(d, shard, tomllib.loads(text), text))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise RunDirError(f"{d / layout.CONFIG}: cannot read: {type(err).__name__}") from None
    first = shards[0]
    for s in shards[1:]:
        if s.shard.count != first.shard.count:
            raise RunDirError(f"{s.name} is one of {s.shard.count} shards, {first.name} one of {first.shard.count}: not the same sharded run")
        differences = config_differences(first.config, s.config, form="key {key} differs ({a!r} vs {b!r})")
        if differences:
            raise RunDirError(f"{s.name} has another config than {first.name}: {'; '.join(differences[:3])}")
        if s.shard.assignment != first.shard.assignment:
            raise RunDirError(f"{s.name} was assigned other models than {first.name} (its shard.json differs): not the same sharded run")
    seen: dict[int, ShardDir] = {}
    for s in shards:
        if s.shard.index in seen:
            raise RunDirError(f"shard {s.shard.label} given twice: {seen[s.shard.index].path} and {s.path}")
        seen[s.shard.index] = s
    missing = [i for i in range(1, first.shard.count + 1) if i not in seen]
    if missing:
        raise RunDirError(", ".join(f"shard {i}/{first.shard.count} missing" for i in missing) + ": give every shard's run directory")
    return [seen[i] for i in sorted(seen)]


def final_state(s: ShardDir) -> dict:
    """The shard's final checkpoint (vouched for by its manifest); not finished: a RunDirError."""
    e = s.config.get("experiment", {})
    seeds = list(e.get("seeds") or [e.get("seed", 0)])
    keys = SimpleNamespace(seeds=seeds, models=[SimpleNamespace(name=n) for n in s.shard.models])  # what a Checkpointer reads of a Config
    checkpointer = Checkpointer(s.path, keys, Dist(), merging=True)  # its messages speak of merging
    state = checkpointer.load()
    if state is None or not state["finished"]:
        at = f"its last checkpoint is at {checkpointer.last_good}" if state is not None else "no checkpoint yet"
        raise RunDirError(f"{s.name} has not finished ({at}): `compare resume {s.path}` first")
    return state


def merge_shards(dirs: list[Path], out: Path, overwrite: bool = False, plots: bool = True):
    """Check the shards, write RUN, finalize it; returns the leaderboard (runner/report)."""
    shards = read_shards(dirs)
    refuse_overlap([s.path for s in shards], Path(out))
    states = [final_state(s) for s in shards]
    refuse_unrebuildable(shards, states)
    with claim_run_dir(out, fresh=True, overwrite=overwrite):
        return write_merged(shards, states, Path(out), plots)


def refuse_overlap(inputs: list[Path], out: Path) -> None:
    """--out must be none of the shards, hold none of them and lie inside none of them: with
    --overwrite the claim would remove what is being merged (before anything is removed)."""
    target = out.resolve()
    for path in inputs:
        shard = path.resolve()
        if shard == target:
            raise RunDirError(f"--out {out} is the shard {path} itself; merge into another folder")
        if target in shard.parents:  # RUN/.shards/...
            raise RunDirError(f"{path} lies inside --out {out}; merge into another folder")
        if shard in target.parents:
            raise RunDirError(f"--out {out} lies inside the shard {path}; merge into another folder")


def write_merged(shards: list[ShardDir], states: list[dict], out: Path, plots: bool = True):
    """Write the merged run into `out`, whose claim the caller holds; returns the leaderboard."""
    config = shards[0].config
    order = [m["name"] for m in config.get("model", [])]
    e = config.get("experiment", {})
    seeds = list(e.get("seeds") or [e.get("seed", 0)])
    atomic.write_text(out / layout.CONFIG, shards[0].config_text)
    env = json.loads((shards[0].path / layout.ENV).read_text())
    env.pop("shard", None)
    env["merged_from"] = {"shards": len(shards), "dirs": [str(s.path.resolve()) for s in shards], "assignment": [list(s.shard.models) for s in shards]}
    atomic.write_text(out / layout.ENV, json.dumps(env, indent=2) + "\n")
    if (shards[0].path / layout.VAL_INDICES).exists():
        atomic.write_bytes(out / layout.VAL_INDICES, (shards[0].path / layout.VAL_INDICES).read_bytes())
    _merge_models_csv(shards, order, out)
    position = {name: i for i, name in enumerate(order)}
    rows = sorted((r for st in states for r in st["history"]), key=lambda r: (seeds.index(r["seed"]), r["epoch"], position[r["model"]]))
    HistorySink(out, rows).write([])
    for s in shards:
        for model in s.shard.models:
            for folder in COPIED:
                _copy_tree(s.path / folder / model, out / folder / model, out)
            error = layout.error_file(s.path, model)
            if error.is_file():
                _copy_tree(error, layout.error_file(out, model), out)
    reported = config.get("report", {}).get("select", "final")
    for s, state in zip(shards, states):  # what was copied damaged (or not at all) is written again
        repair_predictions(out, state, reported, source=s.path)
        repair_weights(out, state, len(seeds) > 1, source=s.path)
    checkpointer = Checkpointer(out, SimpleNamespace(seeds=seeds, models=[SimpleNamespace(name=n) for n in order]), Dist())
    checkpointer.start(recorded_base_dir(shards[0].path) or Path("."), shards[0].config_text)
    checkpointer.save_state(_merged_state(states, order, rows))
    return finalize_run(out, plots=plots)


def refuse_unrebuildable(shards: list[ShardDir], states: list[dict]) -> None:
    """A shard's prediction or weights file that fails its checks and that its final checkpoint
    holds no copy of (one written before checkpoints kept them): a RunDirError, called before
    anything of the merged run is written."""
    for s, state in zip(shards, states):
        e = s.config.get("experiment", {})
        _refuse_unrebuildable(s, state, len(e.get("seeds") or [0]) > 1)


def _refuse_unrebuildable(s: ShardDir, state: dict, several_seeds: bool) -> None:
    held = {layout.weights_file(s.path, m, seed, which) for m, seed, which, _ in kept_weights(state, several_seeds)}
    held |= {layout.predictions_file(s.path, m, seed) for seed, record in (state.get("predictions") or {}).items() for m in record["models"]}
    bad = []
    for model in s.shard.models:
        files = sorted((s.path / layout.PREDICTIONS / model).glob("*" + layout.PREDICTIONS_SUFFIX))
        bad += [f"{f} is {why}" for f in files if layout.predictions_seed(f) is not None and f not in held and (why := prediction_damage(f))]
        bad += [f"{f} is {why}" for f in sorted((s.path / layout.WEIGHTS / model).rglob("*.pt")) if f not in held and (why := damage(f))]
    if bad:
        raise RunDirError(f"cannot merge {s.name}: {'; '.join(bad)}, and its checkpoint holds no copy to rebuild it from; nothing was written; rerun the shard (its config with --shard {s.shard.label} and --overwrite)")


def _merged_state(states: list[dict], order: list[str], rows: list[dict]) -> dict:
    """The final checkpoint the unsharded run would have left: every model's history, fused
    labels and kept predictions; the rest as in any finished run."""
    fused = None
    if any(st.get("fused") is not None for st in states):
        fused = {k: v for st in states for k, v in (st.get("fused") or {}).items()}
    kept: dict = {}
    for st in states:
        for seed, record in (st.get("predictions") or {}).items():
            merged = kept.setdefault(seed, {"targets": record["targets"], "models": {}})
            merged["models"] |= record["models"]
    for record in kept.values():
        record["models"] = {m: record["models"][m] for m in order if m in record["models"]}
    weights: dict = {}
    for st in states:
        for seed, models in (st.get("weights") or {}).items():
            weights.setdefault(seed, {}).update(models)
    weights = {seed: {m: models[m] for m in order if m in models} for seed, models in weights.items()}
    return states[0] | {"models": sorted(order), "history": rows, "fused": fused, "predictions": kept, "weights": weights, "ranks": None, "world_size": 1}


def _merge_models_csv(shards: list[ShardDir], order: list[str], out: Path) -> None:
    """models.csv cell for cell (read as text, so no number is re-formatted), rows in config order."""
    frames = [pd.read_csv(s.path / layout.MODELS_CSV, dtype=str, keep_default_na=False) for s in shards if (s.path / layout.MODELS_CSV).exists()]
    if not frames:
        return
    rows, columns = {}, []
    for frame in frames:
        for record in frame.to_dict("records"):
            rows[record["model"]] = (record, list(frame.columns))
    for name in order:
        if name in rows:
            columns += [c for c in rows[name][1] if c not in columns]
    table = pd.DataFrame([rows[n][0] for n in order if n in rows], columns=columns).fillna("")
    atomic.write_csv(out / layout.MODELS_CSV, table)


def _copy_tree(src: Path, dst: Path, run_dir: Path) -> None:
    """A file, or a folder's files, copied byte for byte (atomic writes; never through a link)."""
    if not src.exists():
        return
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for file in files:
        if file.is_symlink():
            raise RunDirError(f"{file} is a symbolic link; compare copies only real files")
        target = dst / file.relative_to(src) if src.is_dir() else dst
        check_no_links(target, run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, file.read_bytes())

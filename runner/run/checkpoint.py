"""Checkpoints: what one holds, how it is written, and which one a resume may trust.

    RUN_DIR/checkpoints/
      checkpoint.pt        the newest checkpoint
      checkpoint.prev.pt   the one before it (a damaged newest one costs one interval, not the run)
      manifest.json        the sha256 and position of each checkpoint a resume may trust, the
                           folder relative references (`my_model.py:Net`) resolve from, and the
                           resolved config (a resume whose config.toml was deleted reads it)

A checkpoint is `torch.save` of plain containers and tensors only, so it loads with
`torch.load(weights_only=True)`. Every file goes through compare.atomic (temp file, fsync,
os.replace, fsync of the directory). The manifest is written at the start of a fresh run (no
checkpoint yet) and after each new checkpoint is on disk, before it takes the newest name, so a
crash at any point leaves a manifest that vouches for the files a resume finds. Without a
readable manifest only each file's zip CRC32s can be checked, which a deliberate edit passes:
such a checkpoint is refused unless the user accepts it (`--accept-unverified`). See
docs/checkpoints.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compare import atomic
from compare.errors import CompareWarning, RunDirError, clip
from compare.rundir.layout import CHECKPOINT, CHECKPOINT_NEXT, CHECKPOINT_PREV, CHECKPOINTS, ERRORS, HISTORY, MANIFEST, PREDICTIONS, TB, WEIGHTS

if TYPE_CHECKING:
    from compare.config.schema import Config
    from compare.engine.dist import Dist
    from compare.run.sinks import HistorySink

FORMAT = 3  # the layout of the state below; another value is another compare's checkpoint (3: train meters are step logs)
PROGRESS = (HISTORY, TB, ERRORS, PREDICTIONS, WEIGHTS)  # written only once the manifest exists


class Checkpointer:
    """One per run. Rank 0 alone reads and writes; under DDP `save` is collective (every rank
    hands rank 0 its own random streams and partial sums)."""

    def __init__(self, run_dir: Path, cfg: Config, dist: Dist, accept_unverified: bool = False, merging: bool = False):
        self.run_dir, self.folder = Path(run_dir), Path(run_dir) / CHECKPOINTS
        self.seeds = cfg.seeds
        self.models = sorted(m.name for m in cfg.models)
        self.dist = dist
        self.history: HistorySink | None = None  # set once the run's history sink exists
        self.fused: dict | None = None  # model name -> fused group label ("" = unfused); None when fuse is off
        self.kept: dict = {}  # seed -> its test predictions (runner/run/predictions.py): a resume rebuilds damaged files
        self.kept_weights: dict = {}  # seed -> model -> "final"/"best_val" -> the weights written (runner/run/weights.py)
        self.manifest: dict = {"format": FORMAT, "checkpoints": []}
        self.last_good: str | None = None  # where the newest trusted checkpoint stands, for messages
        self.loaded: Path | None = None  # the file a resume continues from
        self.accept_unverified = accept_unverified  # no manifest: trust a file whose zip CRCs pass
        self.merging = merging  # `compare merge` reads a shard's final checkpoint: its messages speak of merging

    # ------------------------------------------------------------ writing

    def start(self, base_dir: Path, config_text: str | None = None) -> None:
        """A fresh run: an empty manifest (a resume then knows nothing was checkpointed yet), the
        absolute folder this run resolves relative references from, and config.toml's text."""
        self.folder.mkdir(exist_ok=True)
        self.manifest = {"format": FORMAT, "base_dir": str(Path(base_dir).resolve()), "checkpoints": []}
        if config_text is not None:
            self.manifest["config"] = config_text
        self._write_manifest()

    def save(self, shared) -> None:
        """Mid-seed: called by the pass (a SharedPass) whenever its state is safe to save."""
        ranks = self.dist.gather_objects(shared.rank_state()) if self.dist.enabled else None
        self._commit(self._state(self.seeds.index(shared.seed), shared.state_dict(), ranks))

    def end_seed(self, index: int, predictions: dict | None = None, weights: dict | None = None) -> None:
        """Seed `index` is done: the next one starts fresh; after the last, the run is finished.
        `predictions`, `weights`: what its prediction and weight files were written from, kept from now on."""
        if predictions is not None:
            self.kept[self.seeds[index]] = predictions
        if weights:
            self.kept_weights[self.seeds[index]] = weights
        ranks = self.dist.gather_objects(None) if self.dist.enabled else None
        self._commit(self._state(index + 1, None, ranks, finished=index + 1 == len(self.seeds)))

    def save_state(self, state: dict) -> None:
        """A whole state made elsewhere (runner/run/merge.py: the shards' final states, merged)."""
        self._commit(state)

    def _state(self, seed_index: int, pass_state: dict | None, ranks, finished: bool = False) -> dict:
        return {
            "version": FORMAT,
            "models": self.models,
            "seed_index": seed_index,
            "finished": finished,
            "history": self.history.rows,
            "pass": pass_state,
            "global_rng": torch.get_rng_state(),
            "world_size": self.dist.world,
            "ranks": ranks,
            "fused": self.fused,
            "predictions": self.kept,  # absent from checkpoints written before it (still format 3)
            "weights": self.kept_weights,  # the same
        }

    def _commit(self, state: dict) -> None:
        self.dist.from_main(lambda: self._write(state))

    def _write(self, state: dict) -> None:
        entry = {"where": self.where(state)}
        try:
            with atomic.atomic_write(self.folder / CHECKPOINT_NEXT) as f:
                torch.save(state, f)
            entry["sha256"] = sha256(self.folder / CHECKPOINT_NEXT)
            self.manifest["checkpoints"] = [entry] + self.manifest["checkpoints"][:1]
            self._write_manifest()
        except (OSError, RuntimeError) as err:
            if not atomic.is_disk_full(err):
                raise
            last = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written yet"
            raise RunDirError(f"no space left on device writing {self.folder / CHECKPOINT}; {last}; free some space, then `compare resume {self.run_dir}`") from None
        if (self.folder / CHECKPOINT).exists():
            os.replace(self.folder / CHECKPOINT, self.folder / CHECKPOINT_PREV)
        os.replace(self.folder / CHECKPOINT_NEXT, self.folder / CHECKPOINT)
        atomic.fsync_dir(self.folder)
        self.last_good = entry["where"]

    def _write_manifest(self) -> None:
        atomic.write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")

    def where(self, state: dict) -> str:
        """A checkpoint's position in words: "epoch 3 step 40", "the end of epoch 2", "the end of seed 1"."""
        p, index = state["pass"], state["seed_index"]
        if p is not None:
            at = f"epoch {p['epoch']} step {p['step']}" if p["step"] else f"the end of epoch {p['epoch'] - 1}"
            return at + (f" of seed {p['seed']}" if len(self.seeds) > 1 else "")
        return "the end of the run" if state["finished"] else f"the end of seed {self.seeds[index - 1]}"

    # ------------------------------------------------------------ reading

    def load(self) -> dict | None:
        """The newest checkpoint that is intact, in this format and of this run's models; each
        one passed over is named in a warning. None when the run never reached its first
        checkpoint. A run that made progress but has no trustworthy checkpoint is a RunDirError
        (nothing is deleted: starting over is the user's choice). Reads only: `settle` tidies
        up once the run directory's lock is held."""
        trusted, unverifiable = self._trusted_hashes()
        rejected: list[str] = []
        for name in (CHECKPOINT, CHECKPOINT_NEXT, CHECKPOINT_PREV):
            path = self.folder / name
            if not path.is_file():
                continue
            if trusted is not None and sha256(path) not in trusted:
                if name != CHECKPOINT_NEXT:  # an unvouched checkpoint.next.pt is a write a crash cut short: not damage
                    changed = "the file or the manifest changed after the shard wrote them" if self.merging else "the file is damaged"
                    rejected.append(self._pass_over(path, f"its sha256 differs from the one {MANIFEST} records: {changed}"))
                continue
            if trusted is None:  # what can be checked without the manifest: every member's CRC32
                problem = zip_damage(path)
                if problem is not None:
                    rejected.append(self._pass_over(path, problem))
                    continue
                if self.merging:
                    raise RunDirError(f"cannot merge shard {self.run_dir}: {CHECKPOINTS}/{MANIFEST} is {unverifiable}, so {name} cannot be verified; merge reads only a checkpoint the manifest vouches for (rerun the shard)")
                if not self.accept_unverified:
                    raise RunDirError(
                        f"cannot resume {self.run_dir}: {CHECKPOINTS}/{MANIFEST} is {unverifiable}, so {name} cannot be verified "
                        "(its zip checksums pass, which not every change fails); --accept-unverified trusts it anyway"
                    )
                warnings.warn(f"{CHECKPOINTS}/{MANIFEST} is {unverifiable}: resuming from {name}, checked by its zip checksums only (--accept-unverified)", CompareWarning, stacklevel=3)
            problem, state = self._read(path)
            if problem is None:
                self.last_good, self.loaded = self.where(state), path
                return state
            rejected.append(self._pass_over(path, problem))
        if rejected:
            raise self._damaged("no checkpoint in it can be trusted (" + "; ".join(rejected) + ")")
        if trusted == set():
            return None  # a fresh run killed before its first checkpoint: nothing to lose
        if trusted:
            raise self._damaged(f"{self.folder} lost the checkpoint files {MANIFEST} lists")
        progress = [name for name in PROGRESS if (self.run_dir / name).exists()]
        if progress:
            raise self._damaged(f"{self.folder} is missing, yet the run wrote {', '.join(progress)}")
        return None

    def settle(self) -> None:
        """Under the lock, after `load` found a checkpoint: the one resumed from becomes the newest
        file and the manifest's only entry (a damaged one it skipped is replaced, so the next save
        keeps a good previous one), and temp files of writes a crash cut short go."""
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        if self.loaded.name != CHECKPOINT:
            os.replace(self.loaded, self.folder / CHECKPOINT)
        self.manifest["checkpoints"] = [{"where": self.last_good, "sha256": sha256(self.folder / CHECKPOINT)}]
        self._write_manifest()

    def _trusted_hashes(self) -> tuple[set[str] | None, str]:
        """(the sha256s manifest.json vouches for, ""), or (None, why there are none: "missing",
        "unreadable (...)") when there is no readable manifest."""
        path = self.folder / MANIFEST
        if not path.exists():
            return None, "missing"
        try:
            manifest = json.loads(path.read_text())
            hashes = {entry["sha256"] for entry in manifest["checkpoints"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, f"unreadable ({type(err).__name__}: {clip(str(err), 80)})"
        self.manifest = manifest
        return hashes, ""

    def _read(self, path: Path) -> tuple[str | None, dict | None]:
        """(None, state) for this run's checkpoint, else (why not, None)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: fall back
            return f"{type(err).__name__}: {err}", None
        if not isinstance(state, dict) or "version" not in state:
            return "not a compare checkpoint", None
        if state["version"] != FORMAT:
            return f"checkpoint format {state['version']!r}, this compare reads format {FORMAT}", None
        if state.get("models") != self.models:
            return f"it holds the models {', '.join(map(str, state.get('models') or []))}, this run has {', '.join(self.models)}", None
        return None, state

    def _pass_over(self, path: Path, problem: str) -> str:
        warnings.warn(f"checkpoint {path} is unreadable ({problem}); trying the previous one", CompareWarning, stacklevel=4)
        return f"{path.name}: {problem}"

    def _damaged(self, what: str) -> RunDirError:
        if self.merging:
            return RunDirError(f"cannot merge shard {self.run_dir}: {what}. Nothing was written; rerun the shard (its config with --shard and --overwrite)")
        return RunDirError(
            f"cannot resume {self.run_dir}: {what}. Nothing was deleted; to start over, "
            "run its config with --overwrite (or another --out)"
        )


def zip_damage(path: Path) -> str | None:
    """Why `path` fails the zip checks (torch.save writes a zip; each member carries a CRC32 that
    torch.load does not check), or None when every member's CRC32 matches."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"not a readable zip file ({type(err).__name__}: {clip(str(err), 80)}): the file is damaged"
    return None if bad is None else f"the CRC32 of its member {bad} does not match: the file is damaged"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_config(run_dir: Path) -> str | None:
    """config.toml's text as the run recorded it in its manifest (None for a run that predates the
    record, or whose manifest is missing or unreadable)."""
    try:
        text = json.loads((Path(run_dir) / CHECKPOINTS / MANIFEST).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return text if isinstance(text, str) else None


def recorded_base_dir(run_dir: Path) -> Path | None:
    """The absolute folder a run resolved relative references from (None for a run that
    predates the record, or whose manifest is unreadable)."""
    try:
        base = json.loads((Path(run_dir) / CHECKPOINTS / MANIFEST).read_text()).get("base_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(base) if isinstance(base, str) else None

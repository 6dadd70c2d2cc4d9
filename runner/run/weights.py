"""What a checkpoint keeps of the weights a run writes (models/<model>/[seed_<s>/]final.pt and
best_val.pt), and how a resume or `compare merge` rebuilds a file from it that is missing or
fails the sha256 beside it (runner/rundir/integrity.py), so a damaged file does not spread into
a later run's `init`.

The checkpoint holds each finished seed's files (`weights`: seed -> model -> "final"/"best_val"
-> state_dict) and, mid-seed, those of the seed in progress (`pass.weights`): every checkpoint
grows by the weights kept, two state_dicts per model and seed (docs/checkpoints.md)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

from compare.errors import CompareNote
from compare.rundir.integrity import damage
from compare.rundir.layout import WEIGHTS, weights_file
from compare.run.sinks import write_weights


def kept_weights(checkpoint: dict, several_seeds: bool) -> Iterator[tuple[str, int | None, str, dict]]:
    """(model, seed folder or None, "final"/"best_val", state_dict) for each file the checkpoint holds."""
    for seed, models in (checkpoint.get("weights") or {}).items():
        for model, files in models.items():
            for which, state in files.items():
                yield model, seed if several_seeds else None, which, state
    current = checkpoint.get("pass") or {}
    for model, files in (current.get("weights") or {}).items():
        for which, state in files.items():
            yield model, current["seed"] if several_seeds else None, which, state


def repair_weights(run_dir: Path, checkpoint: dict, several_seeds: bool, source: Path | None = None) -> list[Path]:
    """Rewrite into `run_dir` each weights file the checkpoint holds whose copy in `source` (a
    shard's directory when merging; else `run_dir`) is missing, damaged or without its checksum;
    one note a file. Returns the files checked and rebuilt (in `source`)."""
    rebuilt = []
    for model, seed, which, state in kept_weights(checkpoint, several_seeds):
        path = weights_file(source or run_dir, model, seed, which)
        why = damage(path, strict=True)
        if why is None:
            continue
        target = write_weights(run_dir, model, seed, which, state)
        where = "from the checkpoint" if source is None else f"into {target} from the shard's checkpoint"
        warnings.warn(f"{path} was {why}; rebuilt {where}", CompareNote, stacklevel=2)
        rebuilt.append(path)
    return rebuilt


def unrepairable(run_dir: Path, models: list[str], rebuilt: list[Path]) -> list[str]:
    """The weights files of `models` that fail their checksum and were not rebuilt (a checkpoint
    from before kept weights holds none), each with why."""
    bad = []
    for model in models:
        for path in sorted((Path(run_dir) / WEIGHTS / model).rglob("*.pt")):
            why = damage(path)
            if why is not None and path not in rebuilt:
                bad.append(f"{path} is {why}")
    return bad

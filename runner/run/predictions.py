"""What a checkpoint keeps of each finished seed's test predictions, and how a resume (or
`compare merge`, from a shard's checkpoint) rebuilds predictions/<model>/seed_<s>.npz from it
when the file is missing or damaged (a truncated copy, a disk that lost it, a value changed: the
sha256 beside it, runner/rundir/integrity.py): the report then has its paired tests again."""
from __future__ import annotations

import warnings
from pathlib import Path

from compare.errors import CompareNote
from compare.report.run_data import prediction_damage
from compare.rundir.layout import predictions_file
from compare.run.sinks import write_predictions


def kept_predictions(shared) -> dict | None:
    """A finished seed's pass (a SharedPass) -> what `write_predictions` was given for each of
    its models: plain tensors and ints (a checkpoint loads them with weights_only=True)."""
    def chosen(pair):
        return None if pair is None else {"epoch": int(pair[0]), "stats": pair[1]}

    models = {s.name: {"final": chosen(s.final), "best": chosen(s.best)} for s in shared.slots if s.final is not None}
    return {"targets": shared.targets, "models": models} if models else None


def repair_predictions(run_dir: Path, checkpoint: dict, reported: str, source: Path | None = None) -> list[Path]:
    """Rewrite into `run_dir` each prediction file the checkpoint holds whose copy in `source` (a
    shard's directory when merging; else `run_dir`) is missing or unreadable; one note a file.
    `reported`: [report] select. Returns the files rebuilt (in `source`). A checkpoint from
    before this record rebuilds none."""
    rebuilt = []
    for seed, record in (checkpoint.get("predictions") or {}).items():
        for model, chosen in record["models"].items():
            path = predictions_file(source or run_dir, model, seed)
            why = "missing" if not path.exists() else prediction_damage(path)
            if why is None:
                continue
            pair = {k: None if v is None else (v["epoch"], v["stats"]) for k, v in chosen.items()}
            target = write_predictions(run_dir, model, seed, record["targets"], final=pair["final"], best=pair["best"], reported=reported)
            where = "from the checkpoint" if source is None else f"into {target} from the shard's checkpoint"
            warnings.warn(f"{path} was {why}; rebuilt {where}", CompareNote, stacklevel=2)
            rebuilt.append(path)
    return rebuilt

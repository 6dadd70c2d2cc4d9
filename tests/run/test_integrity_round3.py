"""Issue "Edges, round 3", items 20, 21, 24, 25: weight and prediction files verified (a sha256
beside each) and rebuilt from the checkpoint by a resume and by `compare merge`; `compare resume
RUN` of a --place models run stopped before its merge; what `compare resume` says where there is
nothing to resume, and a run whose config.toml was deleted."""
from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from compare.assemble.validate import config_from_dict
from compare.config import tomlio
from compare.errors import CompareNote
from compare.run.checkpoint import sha256
from compare.run.experiment import Experiment
from compare.run.interrupts import Interrupted, StopFlag
from compare.run.shards import Shard
from compare.rundir.guard import claim_run_dir
from compare.rundir.layout import shard_folder
from tests.helpers import cli, compare, digits_config, mlp


def raw_config(**experiment) -> dict:
    raw = digits_config([mlp("a"), mlp("b", lr=0.05)], epochs=1, batch_size=100, eval_batch_size=100, subset=300, test_subset=100, val_fraction=0.2)
    raw["experiment"] |= {"grad_histograms": False} | experiment
    return raw


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-seed run (models/<m>/seed_<s>/final.pt and best_val.pt) and its two shards."""
    root = tmp_path_factory.mktemp("integrity")
    cfg = config_from_dict(raw_config(seeds=[0, 1]))
    Experiment(cfg).run(root / "run", plots=False)
    for i in (1, 2):
        Experiment(cfg, shard=Shard(i, 2)).run(root / f"shard{i}", plots=False)
    return root


@pytest.fixture
def copy(finished, tmp_path):
    def make(name: str):
        shutil.copytree(finished / name, tmp_path / name)
        return tmp_path / name
    return make


def flip_a_bit(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # inside the tensors' bytes: torch.load still reads it
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def checksum_ok(path) -> bool:
    recorded = (path.parent / (path.name + ".sha256")).read_text().split()
    return recorded == [sha256(path), path.name]


def notes(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CompareNote)]


# --- 20. weight files verified and rebuilt on resume -------------------------------------------

def test_resume_rebuilds_damaged_truncated_and_missing_weight_files(copy, finished):
    run = copy("run")
    original = finished / "run" / "models"
    flipped, cut = run / "models" / "a" / "seed_0" / "final.pt", run / "models" / "b" / "seed_1" / "best_val.pt"
    assert checksum_ok(flipped) and checksum_ok(cut)  # written with each file, sha256sum's format
    flip_a_bit(flipped)
    torch.load(flipped, weights_only=True)  # still loads: only the checksum tells
    truncate(cut)
    shutil.rmtree(run / "models" / "a" / "seed_1")
    with pytest.warns(CompareNote) as record:
        result = cli("resume", run, "--no-plots")
    assert result.exit_code == 0, result.output
    said = notes(record)
    assert f"{flipped} was damaged (its sha256 differs from the one final.pt.sha256 records); rebuilt from the checkpoint" in said, said
    assert any(s.startswith(f"{cut} was damaged") for s in said), said
    assert f"{run / 'models' / 'a' / 'seed_1' / 'final.pt'} was missing; rebuilt from the checkpoint" in said, said
    for file in original.rglob("*.pt"):  # every file back, byte for byte, with its checksum
        rebuilt = run / "models" / file.relative_to(original)
        assert rebuilt.read_bytes() == file.read_bytes() and checksum_ok(rebuilt), rebuilt


def test_resume_rebuilds_a_removed_models_folder(copy, finished):
    run = copy("run")
    shutil.rmtree(run / "models")
    with pytest.warns(CompareNote, match="was missing; rebuilt from the checkpoint"):
        result = cli("resume", run, "--no-plots")
    assert result.exit_code == 0, result.output
    want = sorted(p.relative_to(finished / "run") for p in (finished / "run" / "models").rglob("*"))
    assert want and sorted(p.relative_to(run) for p in (run / "models").rglob("*")) == want


class StopAfterReads(StopFlag):
    """SIGTERM from the (reads+1)-th look at the flag on: a checkpoint mid-run, then Interrupted."""

    def __init__(self, reads: int):
        self.reads = reads
        super().__init__()

    @property
    def signum(self):
        self.reads -= 1
        return signal.SIGTERM if self.reads < 0 else None

    @signum.setter
    def signum(self, value):
        pass


def test_resume_mid_seed_rebuilds_the_best_val_weights_of_the_seed_in_progress(tmp_path):
    run = tmp_path / "run"
    cfg = config_from_dict(raw_config(epochs=3))  # 3 steps an epoch: stopped in epoch 2
    with pytest.raises(Interrupted, match="checkpoint written at epoch 2"):
        Experiment(cfg).run(run, plots=False, stop=StopAfterReads(6))
    best = run / "models" / "a" / "best_val.pt"
    kept = best.read_bytes()
    truncate(best)
    with pytest.warns(CompareNote, match=f"{best} was damaged .*; rebuilt from the checkpoint"):
        assert cli("resume", run, "--no-plots").exit_code == 0
    assert checksum_ok(best) and torch.load(best, weights_only=True)
    epochs = [int(line.split(",")[2]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert sorted(set(epochs)) == [1, 2, 3] and len(kept) > 200


def test_init_from_a_damaged_weights_file_is_refused(copy, tmp_path):
    run = copy("run")
    damaged = run / "models" / "a" / "seed_0" / "final.pt"
    flip_a_bit(damaged)
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(digits_config([mlp("a", init=str(damaged))], epochs=1, subset=300, test_subset=100)))
    result = cli("run", config, "--out", tmp_path / "next", "--no-plots")
    assert result.exit_code == 2, result.output
    assert f"{damaged}: its sha256 differs from the one final.pt.sha256 records: the file is damaged" in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "next").exists()


# --- 21. predictions: a changed value is caught; merge checks and rebuilds ----------------------

def resave_with_one_value_changed(path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["final.top1"] = arrays["final.top1"].copy()
    arrays["final.top1"][0] = (arrays["final.top1"][0] + 1) % 10
    np.savez_compressed(path, **arrays)  # a valid npz: only the checksum tells


def test_a_changed_prediction_value_is_caught_by_the_reports_and_rebuilt_by_resume(copy, finished):
    run = copy("run")
    edited = run / "predictions" / "a" / "seed_1.npz"
    resave_with_one_value_changed(edited)
    board = cli("leaderboard", run)
    assert board.exit_code == 0 and f"{edited} is damaged (its sha256 differs" in " ".join(board.output.split()), board.output
    with pytest.warns(CompareNote, match=f"{edited} was damaged .*; rebuilt from the checkpoint"):
        assert cli("resume", run, "--no-plots").exit_code == 0
    with np.load(edited) as got, np.load(finished / "run" / "predictions" / "a" / "seed_1.npz") as want:
        assert got.files == want.files and all(np.array_equal(got[k], want[k]) for k in want.files)
    assert "damaged" not in cli("leaderboard", run).output


def test_merge_rebuilds_damaged_and_missing_shard_files_from_the_shard_checkpoints(copy, finished, tmp_path):
    s1, s2 = copy("shard1"), copy("shard2")  # shard 1 trains a, shard 2 b
    truncate(s1 / "predictions" / "a" / "seed_0.npz")
    (s2 / "predictions" / "b" / "seed_1.npz").unlink()
    flip_a_bit(s2 / "models" / "b" / "seed_0" / "final.pt")
    out = tmp_path / "merged"
    with pytest.warns(CompareNote) as record:
        result = cli("merge", s1, s2, "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    said = notes(record)
    assert any(s.startswith(f"{s1 / 'predictions' / 'a' / 'seed_0.npz'} was damaged") and f"rebuilt into {out / 'predictions' / 'a' / 'seed_0.npz'} from the shard's checkpoint" in s for s in said), said
    assert f"{s2 / 'predictions' / 'b' / 'seed_1.npz'} was missing; rebuilt into {out / 'predictions' / 'b' / 'seed_1.npz'} from the shard's checkpoint" in said, said
    assert any(s.startswith(f"{s2 / 'models' / 'b' / 'seed_0' / 'final.pt'} was damaged") for s in said), said
    for model, shard in (("a", "shard1"), ("b", "shard2")):
        for seed in (0, 1):
            with np.load(out / "predictions" / model / f"seed_{seed}.npz") as got, np.load(finished / shard / "predictions" / model / f"seed_{seed}.npz") as want:
                assert all(np.array_equal(got[k], want[k]) for k in want.files)
        for file in (finished / shard / "models" / model).rglob("*.pt"):
            assert (out / "models" / model / file.relative_to(finished / shard / "models" / model)).read_bytes() == file.read_bytes()
    board = cli("leaderboard", out)
    assert board.exit_code == 0 and "damaged" not in board.output and "no paired test" not in board.output, board.output


def test_merge_refuses_a_damaged_file_its_shard_checkpoint_holds_no_copy_of(copy, tmp_path):
    s1, s2 = copy("shard1"), copy("shard2")
    folder = s2 / "checkpoints"  # a checkpoint written before checkpoints kept weights
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    del state["weights"]
    torch.save(state, folder / "checkpoint.pt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["checkpoints"] = [{"where": "the end of the run", "sha256": sha256(folder / "checkpoint.pt")}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    flip_a_bit(s2 / "models" / "b" / "seed_1" / "best_val.pt")
    result = cli("merge", s1, s2, "--out", tmp_path / "merged", "--no-plots")
    assert result.exit_code == 2, result.output
    assert f"cannot merge shard 2/2 ({s2}): {s2 / 'models' / 'b' / 'seed_1' / 'best_val.pt'} is damaged" in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "merged").exists()


# --- 24. --place models stopped before its merge: `compare resume RUN` --------------------------

class StopWhenTraining(StopFlag):
    """A SIGTERM as training starts (not in start-up): a checkpoint, then Interrupted."""

    @property
    def at_once(self):
        return self.__dict__.get("_at_once")

    @at_once.setter
    def at_once(self, value):
        if value is None and "_at_once" in self.__dict__:
            self.signum = signal.SIGTERM
        self.__dict__["_at_once"] = value


def test_resume_of_a_place_models_run_stopped_before_its_merge(tmp_path):
    """What a rank killed without restarts left: rank 1's folder finished, rank 2's stopped."""
    run = tmp_path / "placed"
    with claim_run_dir(run, fresh=True):  # rank 0's claim on RUN
        pass
    cfg = config_from_dict(raw_config(epochs=2, place="models"))
    Experiment(cfg, shard=Shard(1, 2)).run(shard_folder(run, 1, 2), plots=False, single=True)
    with pytest.raises(Interrupted) as stopped:
        Experiment(cfg, shard=Shard(2, 2)).run(shard_folder(run, 2, 2), plots=False, single=True, stop=StopWhenTraining())
    assert str(stopped.value).endswith(f"`compare resume {run}` goes on from there")  # RUN, not its hidden rank folder
    proc = compare("resume", run, "-q", "--no-plots", env=os.environ | {"OMP_NUM_THREADS": "1"})  # starts torchrun: one worker a rank
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 * 2 and (run / "leaderboard.csv").exists() and (run / "config.toml").exists()
    assert {p.name for p in (run / "predictions").iterdir()} == {"a", "b"}


# --- 25. nothing to resume; config.toml deleted -------------------------------------------------

def test_resume_says_what_is_there_and_the_command_that_starts_a_run(tmp_path):
    missing = cli("resume", tmp_path / "nope")
    assert missing.exit_code == 2 and missing.stderr.strip() == f"error: nothing to resume: {tmp_path / 'nope'} does not exist; `compare run CONFIG --out {tmp_path / 'nope'}` starts a run there", missing.stderr
    claimed = tmp_path / "claimed"
    with claim_run_dir(claimed, fresh=True):  # a run killed before it wrote config.toml
        pass
    said = cli("resume", claimed)
    assert said.exit_code == 2 and said.stderr.strip() == f"error: nothing to resume in {claimed}: a run claimed it but stopped before it wrote config.toml; `compare run CONFIG --out {claimed}` starts a run there", said.stderr


def test_resume_of_a_run_whose_config_toml_was_deleted_reads_the_recorded_config(copy, finished):
    run = copy("run")
    (run / "config.toml").unlink()
    with pytest.warns(CompareNote, match="config.toml is missing: resuming with the config checkpoints/manifest.json records"):
        result = cli("resume", run, "--no-plots")
    assert result.exit_code == 0 and "already finished" in result.output, result.output
    assert (run / "config.toml").read_bytes() == (finished / "run" / "config.toml").read_bytes()

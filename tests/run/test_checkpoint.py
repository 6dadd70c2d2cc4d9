"""Checkpoints a resume can trust: each damaged checkpoint is passed over with a warning and
the run resumes bitwise from the previous one; a run without a trustworthy one is refused
(exit 2), never wiped; a full disk, a finished run's lost reports, `compare resume` of a run
with a file reference, and `--resume` of an empty directory. In process, on digits."""
from __future__ import annotations

import errno
import json
import random
import shutil
import signal
from contextlib import contextmanager

import pandas as pd
import pytest
import torch

from compare.assemble.validate import config_from_dict
from compare.errors import CompareWarning, RunDirError
from compare.run.checkpoint import FORMAT, sha256
from compare.run.experiment import Experiment
from compare.run.interrupts import Interrupted, StopFlag
from compare.run.progress import Progress
from tests.helpers import compare, digits_config, history, mlp, write

RAW = digits_config([mlp("a"), mlp("b", seed=5)], epochs=2, batch_size=100, eval_batch_size=100, subset=600, test_subset=200)
RAW["experiment"] |= {"checkpoint_every_steps": 4, "grad_histograms": False}
BIT_FLIPS = 16


def experiment(raw=RAW) -> Experiment:
    return Experiment(config_from_dict(json.loads(json.dumps(raw))))


class StopAt(Progress):
    """Asks the run to stop (as a signal does) after `step` of `epoch`."""

    def __init__(self, flag: StopFlag, epoch: int, step: int):
        self.flag, self.at = flag, (epoch, step)

    @contextmanager
    def epoch(self, epoch, epochs, batches, seed=None, start=0):
        def on_step(step, slots):
            if (epoch, step + 1) == self.at:
                self.flag.signum = signal.SIGINT

        yield on_step


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    experiment().run(run_dir, plots=False)
    return history(run_dir)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """A run stopped at epoch 1 step 5: checkpoint.pt is that step, checkpoint.prev.pt step 4."""
    run_dir = tmp_path_factory.mktemp("cut") / "run"
    flag = StopFlag()
    with pytest.raises(Interrupted):
        experiment().run(run_dir, plots=False, progress=StopAt(flag, 1, 5), stop=flag)
    return run_dir


def damaged_copy(cut, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cut, run_dir)
    return run_dir, run_dir / "checkpoints" / "checkpoint.pt"


def resume_warns(run_dir, match: str):
    with pytest.warns(CompareWarning, match=match):
        return experiment().run(run_dir, resume=True, plots=False)


def test_the_cut_run_has_two_checkpoints_and_a_manifest_vouching_for_both(cut):
    folder = cut / "checkpoints"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [e["sha256"] for e in manifest["checkpoints"]] == [sha256(folder / "checkpoint.pt"), sha256(folder / "checkpoint.prev.pt")]
    assert [e["where"] for e in manifest["checkpoints"]] == ["epoch 1 step 5", "epoch 1 step 4"]


@pytest.mark.parametrize("trial", range(BIT_FLIPS))
def test_a_bit_flip_in_the_newest_checkpoint_falls_back_and_resumes_bitwise(cut, reference, tmp_path, trial):
    run_dir, newest = damaged_copy(cut, tmp_path)
    data = bytearray(newest.read_bytes())
    rng = random.Random(1000 + trial)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    newest.write_bytes(bytes(data))
    resume_warns(run_dir, "sha256 differs from the one manifest.json records")
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


def test_a_truncated_newest_checkpoint_falls_back_and_resumes_bitwise(cut, reference, tmp_path):
    run_dir, newest = damaged_copy(cut, tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])
    resume_warns(run_dir, f"checkpoint {newest} is unreadable")
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


def test_a_foreign_state_dict_falls_back_and_resumes_bitwise(cut, reference, tmp_path):
    run_dir, newest = damaged_copy(cut, tmp_path)
    torch.save(torch.nn.Linear(3, 2).state_dict(), newest)
    resume_warns(run_dir, "sha256 differs")
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


def test_a_checkpoint_of_another_format_vouched_for_is_passed_over(cut, reference, tmp_path):
    """Format and model set are checked too: a manifest cannot vouch for another run's file."""
    run_dir, newest = damaged_copy(cut, tmp_path)
    state = torch.load(newest, weights_only=True)
    torch.save(state | {"version": 1}, newest)
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    manifest["checkpoints"][0]["sha256"] = sha256(newest)
    (run_dir / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    resume_warns(run_dir, f"checkpoint format 1, this compare reads format {FORMAT}")
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


def test_checkpoints_of_another_run_are_refused_with_exit_2(cut, tmp_path):
    other = tmp_path / "other"
    experiment(digits_config([mlp("a"), mlp("c")], epochs=2, subset=200, test_subset=100)).run(other, plots=False)
    run_dir, _ = damaged_copy(cut, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(other / "checkpoints", run_dir / "checkpoints")
    with pytest.warns(CompareWarning, match="it holds the models a, c, this run has a, b"), pytest.raises(RunDirError) as err:
        experiment().run(run_dir, resume=True, plots=False)
    assert err.value.exit_code == 2 and "no checkpoint in it can be trusted" in str(err.value) and "--overwrite" in str(err.value)


def test_no_trustworthy_checkpoint_is_exit_2_and_nothing_is_deleted(cut, tmp_path):
    run_dir, newest = damaged_copy(cut, tmp_path)
    for path in (newest, newest.with_name("checkpoint.prev.pt")):
        path.write_bytes(path.read_bytes()[:500])
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.warns(CompareWarning), pytest.raises(RunDirError) as err:
        experiment().run(run_dir, resume=True, plots=False)
    assert "checkpoint.pt: its sha256 differs" in str(err.value) and "checkpoint.prev.pt: its sha256 differs" in str(err.value)
    assert "Nothing was deleted" in str(err.value)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_a_missing_checkpoints_folder_is_exit_2_and_nothing_is_deleted(cut, tmp_path):
    run_dir, _ = damaged_copy(cut, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    with pytest.raises(RunDirError, match=r"checkpoints is missing, yet the run wrote tb. Nothing was deleted"):
        experiment().run(run_dir, resume=True, plots=False)
    assert (run_dir / "tb").is_dir()


def test_a_missing_manifest_is_refused_unless_accepted_then_warns_and_resumes_bitwise(cut, reference, tmp_path):
    run_dir, _ = damaged_copy(cut, tmp_path)
    (run_dir / "checkpoints" / "manifest.json").unlink()
    with pytest.raises(RunDirError, match="manifest.json is missing, so checkpoint.pt cannot be verified"):
        experiment().run(run_dir, resume=True, plots=False)
    with pytest.warns(CompareWarning, match="manifest.json is missing: resuming from checkpoint.pt, checked by its zip checksums only"):
        experiment().run(run_dir, resume=True, plots=False, accept_unverified=True)
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1200")], ids=["ENOSPC", "unexpected-pos"])
def test_a_full_disk_while_checkpointing_is_exit_2_naming_the_last_good_one(reference, tmp_path, monkeypatch, error):
    run_dir = tmp_path / "run"
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 1: step 4 is saved, the end of epoch 1 is not
            f.write(b"partial")
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunDirError) as err:
        experiment().run(run_dir, plots=False)
    monkeypatch.setattr(torch, "save", real)
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"no space left on device writing {run_dir / 'checkpoints' / 'checkpoint.pt'}; the last good checkpoint is epoch 1 step 4;")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint.pt", "manifest.json"]  # no temp file
    experiment().run(run_dir, resume=True, plots=False)
    pd.testing.assert_frame_equal(history(run_dir), reference, check_exact=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    experiment(digits_config([mlp("a"), mlp("b")], epochs=1, subset=200, test_subset=100)).run(run_dir, plots=False)
    return run_dir


def resume_finished(run_dir):
    return experiment(digits_config([mlp("a"), mlp("b")], epochs=1, subset=200, test_subset=100)).run(run_dir, resume=True, plots=False)


def test_a_finished_run_without_its_reports_or_with_a_garbled_history_gets_them_back(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    expected, board = (run_dir / "history.csv").read_bytes(), (run_dir / "leaderboard.csv").read_bytes()
    (run_dir / "leaderboard.csv").unlink()
    (run_dir / "leaderboard.md").unlink()
    (run_dir / "history.csv").write_text("garbled,\n\x00")
    (run_dir / ".lock").write_text("999999999")  # left by a killed run (its flock died with it)
    result = resume_finished(run_dir)
    assert result.already_finished
    assert (run_dir / "history.csv").read_bytes() == expected and (run_dir / "leaderboard.csv").read_bytes() == board
    assert (run_dir / "leaderboard.md").exists() and not (run_dir / ".lock").exists()


@pytest.mark.parametrize("name", ["env.json", "models.csv"])
def test_a_finished_run_with_a_garbled_env_or_models_file_is_exit_2_naming_it(finished, tmp_path, name):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "leaderboard.csv").unlink()
    (run_dir / name).write_bytes(b'{"garbled\n' if name == "env.json" else b"model\n\xff\xfe\x00\n")  # bad JSON; not UTF-8
    with pytest.raises(RunDirError, match=f"{run_dir / name}: cannot read") as err:
        resume_finished(run_dir)
    assert err.value.exit_code == 2 and not (run_dir / ".lock").exists()


def test_a_full_disk_during_the_reports_is_exit_2_and_resume_writes_them(finished, tmp_path, monkeypatch):
    import compare.report.finalize as finalize  # noqa: PLC0415

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "leaderboard.csv").unlink()
    board = finalize.write_leaderboard

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(finalize, "write_leaderboard", full)
    with pytest.raises(RunDirError, match=f"no space left on device writing the reports of {run_dir}; training finished and is checkpointed"):
        resume_finished(run_dir)
    monkeypatch.setattr(finalize, "write_leaderboard", board)
    assert resume_finished(run_dir).already_finished and (run_dir / "leaderboard.csv").exists()


def test_resume_into_a_new_directory_is_refused(tmp_path):
    config = write(tmp_path, digits_config([mlp("a")], epochs=1, subset=200, test_subset=100))
    proc = compare("run", config, "--resume", "--out", tmp_path / "new", "-q")
    assert proc.returncode == 2 and proc.stderr == f"error: nothing to resume in {tmp_path / 'new'}: it holds no run; leave out --resume to start one there\n"
    assert not (tmp_path / "new").exists()


NET = """import math
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    def forward(self, x):
        return self.fc(x)
"""


def test_compare_resume_resolves_a_relative_file_reference_as_the_run_did(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_model.py").write_text(NET)
    raw = digits_config([{"name": "net", "arch": "my_model.py:Net"}, mlp("m")], epochs=2, subset=300, test_subset=100)
    config = write(project, raw)
    Experiment.from_toml(config).run(tmp_path / "reference", plots=False)
    run_dir, flag = tmp_path / "elsewhere" / "run", StopFlag()
    with pytest.raises(Interrupted):
        Experiment.from_toml(config).run(run_dir, plots=False, progress=StopAt(flag, 1, 2), stop=flag)
    assert json.loads((run_dir / "checkpoints" / "manifest.json").read_text())["base_dir"] == str(project.resolve())
    resumed = compare("resume", run_dir, "-q", "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(history(run_dir), history(tmp_path / "reference"), check_exact=True)
    assert Experiment.from_run_dir(run_dir).run(run_dir, resume=True, plots=False).already_finished

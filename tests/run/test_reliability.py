"""Reliability: quarantine, early stopping, checkpoints with exact resume, interrupts, locks,
hostile input. Subprocesses run `compare` through tests/launcher.py (test-only models and
kill switches)."""
from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from compare.config import tomlio
from compare.assemble.validate import load_config
from compare.rundir.guard import claim_run_dir
from tests.helpers import digits_config, explodes, history, killable, launch, mlp, write_config



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the config the kill tests interrupt."""
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp, [killable("a"), killable("b", seed=5)], checkpoint_every_steps=4)
    proc = launch("run", config, "--out", tmp / "run", "-q")
    assert proc.returncode == 0, proc.stderr
    return config, history(tmp / "run")


# 14 train steps per epoch, 2 models -> 28 training forwards per epoch; 5 eval batches x 2.
@pytest.mark.parametrize(
    "kill",
    [
        {"KILL_AT_STEP": "37"},  # epoch 2, mid-epoch, after a step checkpoint
        {"KILL_AT_EVAL": "17"},  # epoch 2, during evaluation
        {"KILL_IN_SAVE": "5"},  # half-way through writing a checkpoint
    ],
    ids=["mid-epoch", "evaluation", "checkpoint-write"],
)
def test_kill_9_then_resume_is_bitwise_equal(reference, tmp_path, kill):
    config, expected = reference
    run_dir = tmp_path / "run"
    killed = launch("run", config, "--out", run_dir, "-q", env=kill)
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / ".lock").exists()  # left behind by kill -9, but the kernel released its flock
    resumed = launch("run", config, "--out", run_dir, "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not (run_dir / ".lock").exists()
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=True)
    for model in ("a", "b"):  # TensorBoard shows each epoch once despite the replay
        acc = EventAccumulator(str(run_dir / "tb" / model))
        acc.Reload()
        assert [e.step for e in acc.Scalars("accuracy/test")] == [1, 2, 3]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(reference, tmp_path):
    config, expected = reference
    run_dir = tmp_path / "run"
    assert launch("run", config, "--out", run_dir, "-q", env={"KILL_AT_STEP": "45"}).returncode == -signal.SIGKILL
    newest = run_dir / "checkpoints" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    resumed = launch("resume", run_dir, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert f"warning: checkpoint {newest} is unreadable" in resumed.stderr
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=True)


def test_resume_refuses_a_changed_config_and_a_finished_run_says_so(reference, tmp_path):
    config, _ = reference
    run_dir = tmp_path / "run"
    assert launch("run", config, "--out", run_dir, "-q").returncode == 0
    changed = launch("run", config, "--out", run_dir, "-q", "--resume", "--set", "experiment.epochs=4", "--set", "model.a.optimizer.lr=0.1")
    assert changed.returncode == 2
    assert "experiment.epochs (3 -> 4)" in changed.stderr and "model[0].optimizer.lr (0.05 -> 0.1)" in changed.stderr
    again = launch("resume", run_dir)
    assert again.returncode == 0 and "already finished" in again.stdout
    fresh = launch("run", config, "--out", run_dir, "-q")
    assert fresh.returncode == 2 and "--resume" in fresh.stderr and "--overwrite" in fresh.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_completes(reference, tmp_path, sig, code):
    config, expected = reference
    run_dir = tmp_path / "run"
    proc = launch("run", config, "--out", run_dir, "-q", env={"SLOW_STEP_S": "0.03"}, wait=False)
    deadline = time.time() + 120
    while not (run_dir / "history.csv").exists() and time.time() < deadline:  # epoch 1 done
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "interrupted by" in stderr and "checkpoint written" in stderr
    assert (run_dir / "leaderboard.csv").exists()  # the partial leaderboard
    resumed = launch("resume", run_dir, "-q")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=True)


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    config = write_config(tmp_path, [killable("a"), explodes("bad", "raise")], epochs=2)
    proc = launch("run", config, "--out", tmp_path / "run", "-q", "--fail-fast")
    assert proc.returncode == 3
    assert proc.stderr.strip() == "error: model bad failed at epoch 1 step 3: RuntimeError: boom from ExplodesAfter (--fail-fast)"


def test_early_stopping_per_model(run):
    stuck = mlp("stuck", lr=0.0, early_stopping={"metric": "val_acc", "patience": 2})
    result = run(digits_config([mlp("learns"), stuck], epochs=5, val_fraction=0.2))
    rows = result.history.groupby("model")["epoch"].max()
    assert rows["stuck"] == 3 and rows["learns"] == 5  # best at epoch 1, two epochs without gain
    board = result.leaderboard.set_index("model")
    assert board.loc["stuck", "status"] == "early_stopped" and board.loc["stuck", "stopped_at"] == "epoch 3 (best epoch 1)"
    assert board.loc["learns", "status"] == "done"


def test_a_second_run_on_the_same_dir_is_locked_out(tmp_path):
    """(A lock left by kill -9 is free: the kernel released it; see the kill tests.)"""
    config = write_config(tmp_path, [mlp("a")], epochs=1)
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir, fresh=True):  # this (live) process holds the directory
        (run_dir / "config.toml").write_text(tomlio.dumps(load_config(config).to_dict()))
        proc = launch("run", config, "--out", run_dir, "--resume", "-q")
        assert proc.returncode == 2 and f"in use by another compare run (pid {os.getpid()})" in proc.stderr
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"  # untouched

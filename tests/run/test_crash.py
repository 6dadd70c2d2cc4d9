"""Crash test: kill -9 at random points (fixed seed) and in the two windows after training
(after the final checkpoint, before leaderboard.csv; during the reports), each resumed and
compared bitwise with one uninterrupted reference run. Signals in the last evaluation, the
reports and at startup. Commands run in children forked by one tests/launcher.py --trials
process, so a trial costs its training, not a Python start."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from compare.config import tomlio
from tests.helpers import ROOT, digits_config, history, killable

KILLS, KILLS_PER_RUN = 30, 6  # random kill points; a run directory takes at most 6 in a row
# Per run: 6 steps x 2 models = 12 training forwards per epoch; 2 eval batches x 2 models per
# epoch after the 2 probing forwards of the build (evaluation forwards 1-2, before the run
# directory exists); a checkpoint every 4 steps, after epoch 1 and at the end: 2 epochs hold
# forwards 1-24, evaluations 3-10 and checkpoints 1-4.
POINTS = {"KILL_AT_STEP": (1, 24), "KILL_AT_EVAL": (3, 10), "KILL_IN_SAVE": (1, 4)}


@pytest.fixture(scope="module")
def reference(trials, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    raw = digits_config([killable("a"), killable("b", seed=5)], epochs=2, batch_size=100, eval_batch_size=100, subset=600, test_subset=200)
    raw["experiment"] |= {"checkpoint_every_steps": 4, "grad_histograms": False}
    config = tmp / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    code, log = trials("run", config, "--out", tmp / "reference", "-q", "--no-plots")
    assert code == 0, log
    return config, history(tmp / "reference")


def assert_finished_like(run_dir: Path, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=True)
    assert (run_dir / "leaderboard.csv").exists() and (run_dir / "leaderboard.md").exists()
    assert not (run_dir / ".lock").exists()


def test_kill_9_at_random_points_then_resume_is_bitwise_equal(trials, reference, tmp_path):
    """Kill -9 at a random point; resume with another random kill point until a resume runs
    through (after 6 kills: a plain resume); compare with the reference."""
    config, expected = reference
    rng = random.Random(2026)
    kills = runs = 0
    while kills < KILLS:
        run_dir, runs = tmp_path / f"run{runs}", runs + 1
        for attempt in range(KILLS_PER_RUN):
            switch = rng.choice(sorted(POINTS))
            low, high = POINTS[switch]
            high = high if attempt == 0 else (low + high) // 2  # a resume has part of the run left
            code, log = trials("run", config, "--out", run_dir, "-q", "--no-plots", *(["--resume"] if attempt else []), **{switch: str(rng.randint(low, high))})
            assert code in (0, -signal.SIGKILL), log
            if code == 0:
                break
            kills += 1
        else:
            code, log = trials("resume", run_dir, "-q", "--no-plots")
            assert code == 0, log
        assert_finished_like(run_dir, expected)


@pytest.mark.parametrize("window", ["1", "2"], ids=["after-final-checkpoint-before-leaderboard", "during-reports"])
def test_kill_9_after_training_then_resume_writes_the_reports(trials, reference, tmp_path, window):
    config, expected = reference
    run_dir = tmp_path / "run"
    assert trials("run", config, "--out", run_dir, "-q", "--no-plots", KILL_IN_REPORTS=window)[0] == -signal.SIGKILL
    code, log = trials("resume", run_dir, "-q", "--no-plots")
    assert code == 0 and "already finished" in log and not (run_dir / ".lock").exists(), log  # the killed run's flock died with it
    assert trials("resume", run_dir, "-q", "--no-plots")[0] == 0
    assert_finished_like(run_dir, expected)


@pytest.mark.parametrize("where, switch", [("last-evaluation", {"KILL_AT_EVAL": "7"}), ("reports", {"KILL_IN_REPORTS": "2"})])
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_signal_after_training_exits_128_plus_signal_and_resume_finishes(trials, reference, tmp_path, where, switch, sig):
    config, expected = reference
    run_dir = tmp_path / "run"
    code, log = trials("run", config, "--out", run_dir, "-q", "--no-plots", KILL_SIGNAL=sig, **switch)
    assert code == 128 + getattr(signal, f"SIG{sig}"), log
    lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by SIG{sig}; training finished and checkpointed"), log
    assert not (run_dir / ".lock").exists()
    code, log = trials("resume", run_dir, "-q", "--no-plots")
    assert code == 0 and "already finished" in log, log
    assert_finished_like(run_dir, expected)


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_startup_is_one_line_and_128_plus_signal(reference, tmp_path, sig):
    config, _ = reference
    proc = subprocess.Popen([sys.executable, "-m", "compare", "run", str(config), "--out", str(tmp_path / "run"), "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _catches_sigterm(proc.pid):  # compare's handler is installed: the imports follow
        time.sleep(0.001)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"error: interrupted by {sig.name}; "), stderr

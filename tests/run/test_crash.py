"""Crash test: kill -9 at random points (fixed seed) and in the two windows after training
(after the final checkpoint, before leaderboard.csv; during the reports), each resumed and
compared bitwise with one uninterrupted reference run. Signals in the last evaluation, the
reports and at startup. Every command runs in a child forked by tests/launcher.py --trials, so
a trial costs its training, not a Python start."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from runner.config import tomlio
from tests.helpers import LAUNCHER, ROOT, digits_config, history, killable

KILL_CHAINS, KILLS_PER_CHAIN = 7, 5  # 35 random kill points; each chain ends with a plain resume
# Per run: 6 steps x 2 models = 12 training forwards per epoch; 2 eval batches x 2 models per
# epoch after the 2 probing forwards of the build (evaluation forwards 1-2, before the run
# directory exists); a checkpoint every 4 steps, after epoch 1 and at the end: 2 epochs hold
# forwards 1-24, evaluations 3-10 and checkpoints 1-4.
POINTS = {"KILL_AT_STEP": (1, 24), "KILL_AT_EVAL": (3, 10), "KILL_IN_SAVE": (1, 4)}


def trials(tmp: Path, commands: list[tuple[list, dict]]) -> list[tuple[int, str]]:
    """(exit status, output) of each command, run one after another."""
    spec = [{"args": [str(a) for a in args], "env": env, "log": str(tmp / f"trial{i}.log")} for i, (args, env) in enumerate(commands)]
    (tmp / "trials.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(LAUNCHER), "--trials", str(tmp / "trials.json")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    statuses = json.loads(proc.stdout.strip().splitlines()[-1])
    return [(code, Path(t["log"]).read_text()) for code, t in zip(statuses, spec)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    raw = digits_config([killable("a"), killable("b", seed=5)], epochs=2, batch_size=100, eval_batch_size=100, subset=600, test_subset=200)
    raw["experiment"] |= {"checkpoint_every_steps": 4, "grad_histograms": False}
    config = tmp / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    [(code, log)] = trials(tmp, [(["run", config, "--out", tmp / "reference", "-q", "--no-plots"], {})])
    assert code == 0, log
    return config, history(tmp / "reference")


def assert_finished_like(run_dir: Path, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=True)
    assert (run_dir / "leaderboard.csv").exists() and (run_dir / "leaderboard.md").exists()
    assert not (run_dir / ".lock").exists()


def test_kill_9_at_random_points_then_resume_is_bitwise_equal(reference, tmp_path):
    config, expected = reference
    rng = random.Random(2026)
    commands, chains = [], []
    for chain in range(KILL_CHAINS):
        run_dir = tmp_path / f"chain{chain}"
        for kill in range(KILLS_PER_CHAIN):
            switch = rng.choice(sorted(POINTS))
            args = ["run", config, "--out", run_dir, "-q", "--no-plots"] + (["--resume"] if kill else [])
            commands.append((args, {switch: str(rng.randint(*POINTS[switch]))}))
        commands.append((["resume", run_dir, "-q", "--no-plots"], {}))
        chains.append(run_dir)
    results = trials(tmp_path, commands)
    killed = [code for code, _ in results if code == -signal.SIGKILL]
    assert len(killed) >= 30, f"only {len(killed)} of the kill points were reached"
    assert all(code in (0, -signal.SIGKILL) for code, _ in results), [log for code, log in results if code not in (0, -signal.SIGKILL)]
    for run_dir in chains:
        assert_finished_like(run_dir, expected)


@pytest.mark.parametrize("window", ["1", "2"], ids=["after-final-checkpoint-before-leaderboard", "during-reports"])
def test_kill_9_after_training_then_resume_writes_the_reports(reference, tmp_path, window):
    config, expected = reference
    run_dir = tmp_path / "run"
    (killed, _), (resumed, log), (again, _) = trials(tmp_path, [
        (["run", config, "--out", run_dir, "-q", "--no-plots"], {"KILL_IN_REPORTS": window}),
        (["resume", run_dir, "-q", "--no-plots"], {}),
        (["resume", run_dir, "-q", "--no-plots"], {}),
    ])
    assert killed == -signal.SIGKILL
    assert resumed == 0 and "already finished" in log, log
    assert "warning: taking over a stale lock" in log
    assert again == 0
    assert_finished_like(run_dir, expected)


@pytest.mark.parametrize("where, switch", [("last evaluation", {"KILL_AT_EVAL": "7"}), ("reports", {"KILL_IN_REPORTS": "2"})])
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_signal_after_training_exits_128_plus_signal_and_resume_finishes(reference, tmp_path, where, switch, sig):
    config, expected = reference
    run_dir = tmp_path / "run"
    (stopped, log), (resumed, resumed_log) = trials(tmp_path, [
        (["run", config, "--out", run_dir, "-q", "--no-plots"], switch | {"KILL_SIGNAL": sig}),
        (["resume", run_dir, "-q", "--no-plots"], {}),
    ])
    assert stopped == 128 + getattr(signal, f"SIG{sig}"), log
    lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by SIG{sig}; training finished and checkpointed"), log
    assert not (run_dir / ".lock").exists()
    assert resumed == 0 and "already finished" in resumed_log, resumed_log
    assert_finished_like(run_dir, expected)


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_startup_is_one_line_and_128_plus_signal(reference, tmp_path, sig):
    config, _ = reference
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(config), "--out", str(tmp_path / "run"), "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _catches_sigterm(proc.pid):  # compare's handler is installed: the imports follow
        time.sleep(0.001)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"error: interrupted by {sig.name}; "), stderr

"""The run directory (runner/rundir/guard.py, docs/run-directory.md): compare writes only inside
it, replaces only what it wrote, never writes through a symlink, and one run at a time holds it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from compare.assemble.validate import config_from_dict
from compare.errors import ConfigError, RunDirError
from compare.report.finalize import finalize_run
from compare.run.experiment import Experiment
from compare.rundir.guard import LOCK, MARKER, claim_run_dir, run_dir_lock
from compare.rundir.layout import RUN_FILES, RUN_FOLDERS
from tests.helpers import ROOT, compare, digits_config, explodes, killable, launch, mlp, write, write_config

REPRO = '[experiment]\nname="{name}"\ndevice="cpu"\n[data]\ndataset="digits"\n[[model]]\nname="m"\narch="mlp"\n'


def errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def listing(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. names: the run directory lies inside experiment.output_dir -------------------------

def test_an_unsafe_experiment_name_deletes_nothing(tmp_path):
    """The issue's reproduction: `name = ".."` made runs/.. (the project) the run directory."""
    name = ".."
    project = tmp_path / "p"
    (project / "runs" / "old").mkdir(parents=True)
    (project / "src").mkdir()
    (project / "src" / "main.py").write_text("keep")
    (project / "x.toml").write_text(REPRO.format(name=name))
    proc = compare("run", "x.toml", "--overwrite", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: x.toml: experiment.name: {name!r} is not a safe name: use letters, digits, _ . , = + - [ ]"]
    assert (project / "src" / "main.py").read_text() == "keep" and (project / "runs" / "old").is_dir()


@pytest.mark.parametrize("name", ["", ".", "../../x", "/tmp/x", "a/b", "a\\..", ".hidden"])
def test_every_name_that_is_not_one_plain_folder_is_refused(name):
    """`""` made runs/ itself the run directory (--overwrite wiped every run); the others write anywhere."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict(digits_config([mlp("a")]) | {"experiment": {"name": name}})
    assert [(p.key, p.message) for p in caught.value.problems] == [("experiment.name", f"{name!r} is not a safe name: use letters, digits, _ . , = + - [ ]")]


def test_a_name_changed_after_validation_cannot_leave_output_dir():
    experiment = Experiment(digits_config([mlp("a")]))
    assert experiment.default_run_dir() == Path("runs") / "t"
    experiment.config.experiment.name = "../escape"
    with pytest.raises(RunDirError, match="outside experiment.output_dir"):
        experiment.default_run_dir()


# --- 2. the marker: --overwrite replaces only compare's directories, only compare's files ----

def test_overwrite_refuses_a_folder_compare_did_not_write(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep")
    proc = compare("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", victim, "--overwrite", "-q")
    assert proc.returncode == 2
    assert errors(proc) == [f"error: {victim} is not a compare run directory (no {MARKER}); choose another --out"]
    assert {p.name for p in victim.iterdir()} == {"important.txt"}  # no lock, no marker left in it
    assert (victim / "important.txt").read_text() == "keep"


def test_overwrite_removes_what_compare_wrote_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    first = launch("run", write_config(tmp_path, [killable("a"), explodes("bad", "raise")], epochs=1, data={"val_fraction": 0.2}), "--out", out, "-q", "--plots")
    assert first.returncode == 3, first.stderr
    # Every entry a run writes (plots and errors/ included) is one --overwrite knows, and back.
    assert {p.name for p in out.iterdir()} == RUN_FILES | RUN_FOLDERS | {MARKER}
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("mine")
    (out / ".history.csv.4242.tmp").write_text("left by a kill during an atomic write")
    again = launch("run", write_config(tmp_path, [killable("a")], epochs=1), "--out", out, "-q", "--overwrite", "--no-plots")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in out.iterdir()} == (RUN_FILES | RUN_FOLDERS | {MARKER, "notes.txt", "mine"}) - {"errors", "plots", "val_indices.csv"}
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "data.csv").read_text() == "mine"
    assert json.loads((out / MARKER).read_text())["format"] == 1


def test_a_folder_holding_only_the_lock_and_marker_counts_as_empty(tmp_path):
    """A kill between the lock and config.toml leaves these two; pid 1 is alive, and unrelated."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("1\n")
    (out / MARKER).write_text(json.dumps({"format": 1}))
    proc = compare("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", out, "-q", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert (out / "leaderboard.csv").exists() and not (out / LOCK).exists()


def test_claim_rules_without_a_run(tmp_path):
    only_lock = tmp_path / "only_lock"
    only_lock.mkdir()
    (only_lock / LOCK).write_text("1")
    with claim_run_dir(only_lock, fresh=True):  # treated as empty
        (only_lock / "config.toml").write_text("")
    with claim_run_dir(only_lock, fresh=True):  # marker and config.toml alone: a run killed in start-up, nothing to lose
        (only_lock / "history.csv").write_text("")
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume"):
        with claim_run_dir(only_lock, fresh=True):
            pass
    with claim_run_dir(only_lock, fresh=False):  # the resume of the same directory
        pass
    with claim_run_dir(tmp_path / "new" / "deep", fresh=True):
        assert (tmp_path / "new" / "deep" / MARKER).is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / ".notes.1.tmp").write_text("mine")  # looks like a temp file, but not of a name compare writes
    with pytest.raises(RunDirError, match="is not a compare run directory"):
        with claim_run_dir(foreign, fresh=True):
            pass
    assert os.listdir(foreign) == [".notes.1.tmp"]


# --- 3. symlinks ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_out_must_be_a_real_folder(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "symlink":
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
        expected = f"error: {out} is a symbolic link; compare does not write through links: give the real folder as --out"
    else:
        out.write_text("a file")
        expected = f"error: {out} is a file, not a directory; choose another --out"
    proc = compare("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", out, "--overwrite", "-q")
    assert proc.returncode == 2 and errors(proc) == [expected], proc.stderr
    if kind == "symlink":
        assert list((tmp_path / "real").iterdir()) == []
    else:
        assert out.read_text() == "a file"


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run killed in epoch 2, after a step checkpoint: what `resume` continues."""
    tmp = tmp_path_factory.mktemp("killed")
    config = write_config(tmp, [killable("a")], checkpoint_every_steps=4)
    assert launch("run", config, "--out", tmp / "run", "-q", env={"KILL_AT_STEP": "20"}).returncode == -signal.SIGKILL
    return config, tmp / "run"


@pytest.mark.parametrize("entry, command", [("leaderboard.md", "resume"), ("checkpoints", "resume"), ("tb", "run --overwrite")])
def test_a_planted_symlink_is_refused_and_its_target_untouched(killed_run, tmp_path, entry, command):
    config, killed = killed_run
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir, symlinks=True)
    target = tmp_path / "elsewhere" / entry
    target.parent.mkdir()
    if (run_dir / entry).exists():
        shutil.move(run_dir / entry, target)  # the real folder moved elsewhere, a link left
    else:
        target.write_text("someone else's file")
    (run_dir / entry).symlink_to(target)
    before = listing(target) if target.is_dir() else target.read_bytes()
    args = ("resume", run_dir) if command == "resume" else ("run", config, "--out", run_dir, "--overwrite")
    proc = launch(*args, "-q")
    assert proc.returncode == 2
    assert errors(proc) == [f"error: {run_dir / entry} is a symbolic link; compare writes only real files in its run directory: remove the link"]
    assert (listing(target) if target.is_dir() else target.read_bytes()) == before
    assert (run_dir / entry).is_symlink() and not (run_dir / LOCK).exists()


def test_reports_refuse_a_planted_link_instead_of_writing_through_it(run, tmp_path):
    result = run(digits_config([mlp("a")], epochs=1))
    target = tmp_path / "elsewhere.md"
    target.write_text("someone else's file")
    (result.run_dir / "leaderboard.md").unlink()
    (result.run_dir / "leaderboard.md").symlink_to(target)
    with pytest.raises(RunDirError, match="leaderboard.md is a symbolic link; compare writes only real files in its run directory"):
        finalize_run(result.run_dir, plots=False)  # what a resume of a finished run rebuilds
    assert target.read_text() == "someone else's file"
    assert (result.run_dir / "leaderboard.md").is_symlink()


# --- 4. the lock -----------------------------------------------------------------------------

RACE = r"""
import json, multiprocessing, os, sys
from pathlib import Path
from compare.errors import RunDirError
from compare.rundir.guard import LOCK, MARKER, claim_run_dir

def racer(root, rounds, barrier, results):
    for i in range(rounds):
        barrier.wait()  # both start together
        try:
            with claim_run_dir(Path(root) / str(i), fresh=True):
                results.put([i, os.getpid(), "won"])
                barrier.wait()  # hold the directory until the other has tried
        except RunDirError as err:
            results.put([i, os.getpid(), str(err)])
            barrier.wait()

if __name__ == "__main__":
    root, rounds = Path(sys.argv[1]), int(sys.argv[2])
    for i in range(rounds):  # a third: no folder; a third: empty; a third: left by a kill (pid 1 is alive)
        if i % 3:
            (root / str(i)).mkdir()
        if i % 3 == 2:
            (root / str(i) / LOCK).write_text("1\n")
            (root / str(i) / MARKER).write_text('{"format": 1}')
    fork = multiprocessing.get_context("fork")
    barrier, results = fork.Barrier(2, timeout=60), fork.Queue()
    procs = [fork.Process(target=racer, args=(root, rounds, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    rows = [results.get(timeout=120) for _ in range(2 * rounds)]
    for p in procs:
        p.join()
    print(json.dumps({"rows": rows, "exitcodes": [p.exitcode for p in procs], "torch": "torch" in sys.modules}))
"""


def test_two_processes_racing_for_a_directory_one_wins_every_time(tmp_path):
    (tmp_path / "race.py").write_text(RACE)
    (tmp_path / "dirs").mkdir()
    rounds = 200
    proc = subprocess.run([sys.executable, tmp_path / "race.py", tmp_path / "dirs", str(rounds)], capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exitcodes"] == [0, 0] and not report["torch"]
    by_round = defaultdict(list)
    for i, pid, outcome in report["rows"]:
        by_round[i].append((pid, outcome))
    assert sorted(by_round) == list(range(rounds))
    for i, (a, b) in by_round.items():
        assert [a[1], b[1]].count("won") == 1, (i, a, b)
        loser = a[1] if b[1] == "won" else b[1]
        assert re.fullmatch(rf"{tmp_path / 'dirs' / str(i)} is in use by another compare run \(pid (\d+|unknown)\); wait for it or stop it", loser), loser
        assert not (tmp_path / "dirs" / str(i) / LOCK).exists()  # the winner let go


DIES_HOLDING = r"""
import os, signal, sys
from compare.rundir.guard import run_dir_lock
with run_dir_lock(sys.argv[1]):
    ready, tell = os.pipe()
    child = os.fork()
    if child == 0:  # like a DataLoader worker: outlives its parent for a moment
        os.write(tell, b"1")  # fork's hooks have run
        os.read(0, 1)
        os._exit(0)
    os.read(ready, 1)
    print(child, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_lock_dies_with_its_process_not_with_its_forked_workers(tmp_path):
    (tmp_path / "dies.py").write_text(DIES_HOLDING)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen([sys.executable, tmp_path / "dies.py", run_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        child = int(proc.stdout.readline())
        assert proc.wait(timeout=60) == -signal.SIGKILL
        os.kill(child, 0)  # the worker still lives
        assert (run_dir / LOCK).read_text().strip() == str(proc.pid)  # left behind by kill -9
        with run_dir_lock(run_dir):  # yet nobody holds it
            assert (run_dir / LOCK).read_text().strip() == str(os.getpid())
    finally:
        proc.stdin.close()

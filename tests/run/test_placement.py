"""`--place models` (runner/run/placement.py): the models spread over torchrun's ranks (2 CPU
processes, gloo), each rank over the full batches, rank 0 merging: bitwise the one-process run,
also when a worker is killed mid-epoch and torchrun restarts the workers."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import LAUNCHER, ROOT, cli, launch, mlp
from tests.run.test_shards import assert_same_run, config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torchrun gives each worker one thread: so does the reference (CPU sums depend on it)


def torchrun(*args, env=None, restarts=0):
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | ONE_THREAD | (env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", f"--max-restarts={restarts}", str(LAUNCHER), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def test_models_over_two_ranks_equal_one_process_bitwise_after_a_restart(tmp_path):
    cfg = config(tmp_path)
    reference = launch("run", cfg, "--out", tmp_path / "one", "-q", env=ONE_THREAD)
    assert reference.returncode == 0, reference.stderr
    # Rank 1 (shard 2: two of the four models) dies mid-epoch 2; torchrun restarts both workers:
    # rank 0 finds its share finished, rank 1 resumes its own from its checkpoint.
    proc = torchrun("run", cfg, "--place", "models", "--out", tmp_path / "placed", "-q", "--no-plots", env={"KILL_AT_STEP": "7", "KILL_RANK": "1"}, restarts=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exitcode: -9" in proc.stderr  # rank 1 killed, the workers restarted (else no exit 0)
    assert sorted(p.name for p in (tmp_path / "placed" / ".shards").iterdir()) == ["shard-1-of-2", "shard-2-of-2"]
    assert_same_run(tmp_path / "placed", tmp_path / "one")


def test_racing_is_refused_with_place_models(tmp_path):
    cfg = config(tmp_path, models=[mlp("a"), mlp("b")], race={"min_epochs": 1})
    for extra in (["--nproc", "2"], ["--nproc", "2", "--dry-run"]):
        result = cli("run", cfg, "--place", "models", *extra)
        assert result.exit_code == 2 and "experiment.race" in result.stderr and "--place models" in result.stderr, result.stderr
    lone = cli("run", cfg, "--place", "models")
    assert lone.exit_code == 2 and "add --nproc N" in lone.stderr

"""`--place models` (runner/run/ranks.py): the models spread over torchrun's ranks (2 CPU
processes, gloo), each rank over the full batches, rank 0 merging: bitwise the one-process run,
with a race whose eliminations cross the ranks, also when a worker is killed mid-epoch and
torchrun restarts the workers."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from compare.assemble.validate import load_config
from tests.helpers import LAUNCHER, ROOT, cli, digits_config, killable, launch, mlp, write
from tests.run.test_shards import assert_same_run, config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torchrun gives each worker one thread: so does the reference (CPU sums depend on it)


def torchrun(*args, env=None, restarts=0):
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | ONE_THREAD | (env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", f"--max-restarts={restarts}", str(LAUNCHER), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


ADAM = {"name": "Adam", "lr": 0.01}
STILL = {"name": "SGD", "lr": 1e-5}  # learns nothing in 5 epochs: the race eliminates it
RACED = [killable("a", optimizer=ADAM), killable("b", optimizer=STILL), killable("c", args={"hidden": [16], "dropout": 0.1}, optimizer=ADAM), killable("d", seed=7, optimizer=STILL)]


def test_raced_models_over_two_ranks_equal_one_process_bitwise_after_a_restart(tmp_path):
    cfg = config(tmp_path, models=RACED, epochs=5, race={"min_epochs": 1})  # looks after epochs 1-4
    reference = launch("run", cfg, "--out", tmp_path / "one", "-q", env=ONE_THREAD)
    assert reference.returncode == 0, reference.stderr
    plan = launch("run", cfg, "--place", "models", "--nproc", "2", "--dry-run")
    assert plan.returncode == 0 and "shard 1/2: a, d" in plan.stdout and "shard 2/2: b, c" in plan.stdout, plan.stdout + plan.stderr
    # Rank 0 (a, d) dies in epoch 3 before its look; rank 1 waits there for it; torchrun restarts
    # both, and each replays the look from its own checkpoint and the other's file.
    proc = torchrun("run", cfg, "--place", "models", "--out", tmp_path / "placed", "-q", "--no-plots", env={"KILL_AT_STEP": "18", "KILL_RANK": "0"}, restarts=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exitcode: -9" in proc.stderr  # rank 0 killed, the workers restarted (else no exit 0)
    shards = tmp_path / "placed" / ".shards"
    assert sorted(p.name for p in shards.iterdir()) == ["looks", "shard-1-of-2", "shard-2-of-2"]
    assert_same_run(tmp_path / "placed", tmp_path / "one")
    last = pd.read_csv(tmp_path / "placed" / "history.csv").groupby("model").tail(1).set_index("model")
    # b and c (rank 1) lose to a (rank 0); d to a on its own rank; rank 1 has nothing left at look 4.
    assert last["status"].to_dict() == {"a": "done", "b": "eliminated", "c": "eliminated", "d": "eliminated"}
    assert all(last.loc[m, "eliminated_by"].startswith("a (Holm p") for m in "bcd")
    assert last.loc["c", "epoch"] < 4 and (shards / "looks" / "seed-0" / "epoch-4" / "rank-1.pt").exists()


def test_place_models_needs_torchrun():
    lone = cli("run", "experiments/digits.toml", "--place", "models")
    assert lone.exit_code == 2 and "add --nproc N" in lone.stderr


def test_experiment_place_is_the_config_form_of_place(tmp_path):
    """`experiment.place` says it in the config (the refusal names the file and key); `--place`
    overrides it; a bad value is one line with a suggestion; config.toml does not record it."""
    def config_with(name: str, place: str):
        raw = digits_config([mlp("a"), mlp("b")], epochs=1, subset=200)
        raw["experiment"]["place"] = place
        folder = tmp_path / name
        folder.mkdir()
        return write(folder, raw)

    models = config_with("models", "models")
    lone = cli("run", models)
    assert lone.exit_code == 2 and lone.stderr.strip() == f"error: {models}: experiment.place: models spreads the models over torchrun's ranks: add --nproc N (or start it with torchrun)", lone.stderr
    plan = cli("run", models, "--place", "data", "--dry-run")  # the command line wins
    assert plan.exit_code == 0, plan.stderr
    bad = cli("run", config_with("bad", "model"), "--dry-run")
    assert bad.exit_code == 2 and "experiment.place: expected one of data, models, got 'model'; did you mean 'models'?" in bad.stderr, bad.stderr
    assert "place" not in load_config(models).to_dict()["experiment"]

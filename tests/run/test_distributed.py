"""Scale-out: the shared pass under torchrun (2 CPU processes, gloo) and models on their own
devices. The torchrun runs go through tests/launcher.py (test-only models and kill switches)."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from compare.config import tomlio
from compare.assemble.validate import config_from_dict
from compare.engine.loop import to_devices
from compare.errors import ConfigError, DataError
from compare.assemble.preflight import check_sharding
from compare.data.sampler import ResumableRandomSampler, ShardedBatchSampler, shard_bounds
from tests.helpers import LAUNCHER, ROOT, digits_config, explodes, killable, launch

METRICS = ["model", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean", "grad_norm_max", "lr", "status", "train_samples"]
# fp32, 2 ranks: DDP sums the two half-batch gradients in another order than one process sums
# the whole batch; the difference stays at the level of float32 rounding, far below this.
TOLERANCE = 1e-5


def torchrun(*args, env=None, nproc=2, restarts=0):
    """`torchrun --standalone --nproc_per_node=2 tests/launcher.py ARGS` on the CPU (gloo)."""
    full_env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | (env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", f"--max-restarts={restarts}", str(LAUNCHER), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def write_config(path, models, **experiment):
    raw = digits_config(models, epochs=2, batch_size=100, eval_batch_size=100)  # 1,347 train: last batch 47 splits 23/24
    raw["experiment"] |= {"grad_histograms": False} | experiment
    path.write_text(tomlio.dumps(raw))
    return path


def history(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[METRICS]


PLAIN = killable("a", args={"hidden": [32], "dropout": 0.0})  # SGD + momentum, no dropout
MODELS = [
    PLAIN,
    killable("c", seed=5),  # dropout 0.3: per-rank random streams matter for exact resume
    explodes("nan1", "nan") | {"args": {"steps": 3, "mode": "nan", "on_rank": 1}},
    explodes("raise1", "raise") | {"args": {"steps": 3, "mode": "raise", "on_rank": 1}},
]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One uninterrupted 2-process run: the reference for equivalence, outputs and resume."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = write_config(tmp / "exp.toml", MODELS, checkpoint_every_steps=4)
    proc = torchrun("run", config, "--out", tmp / "run", "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, tmp / "run"


def test_two_processes_equal_one_process_within_fp32_tolerance(two_ranks, tmp_path):
    config, run_dir = two_ranks
    single = config_from_dict(digits_config([PLAIN | {"arch": "mlp"}], epochs=2, batch_size=100, eval_batch_size=100))
    from compare.run.experiment import Experiment  # noqa: PLC0415

    one = Experiment(single).run(tmp_path / "one", plots=False).history
    two = history(run_dir).query("model == 'a'").reset_index(drop=True)
    assert len(two) == 2 and (two["train_samples"] == 1347).all()
    for column in ("train_acc", "test_acc", "train_samples"):  # counts: exact
        assert one[column].tolist() == two[column].tolist(), column
    floats = ["train_loss", "test_loss", "grad_norm_mean", "grad_norm_max"]
    diff = (one[floats] - two[floats]).abs().to_numpy().max()
    print(f"max |1 process x 100 - 2 processes x 50| over {floats}: {diff:.3g}")
    assert diff < TOLERANCE


def test_only_rank_0_writes_and_predictions_come_back_in_test_order(two_ranks):
    _, run_dir = two_ranks
    for model in ("a", "c", "nan1", "raise1"):
        events = list((run_dir / "tb" / model).glob("events.out.tfevents.*"))
        training = [e for e in events if not e.name.endswith(".compare-views")]
        assert len(training) == 1, events  # one training writer per model: rank 0's
        assert len({e.name.split(".")[-2 if e in training else -3] for e in events}) == 1, events  # all from one process
    rows = history(run_dir)
    assert not rows.duplicated(["model", "seed", "epoch"]).any()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [".compare-run", "checkpoints", "config.toml", "env.json", "errors", "history.csv", "leaderboard.csv", "leaderboard.md", "models", "models.csv", "plots", "predictions", "report.html", "tb"]
    )
    saved = np.load(run_dir / "predictions" / "a" / "seed_0.npz")
    from compare.datasets import create_dataset  # noqa: PLC0415

    _, test = create_dataset("digits").load_data()
    assert saved["target"].tolist() == [int(y) for _, y in test]  # every test sample once, in order
    assert len(saved["final"]) == len(test)
    accuracy = float((saved["final"] == saved["target"]).mean())
    assert accuracy == pytest.approx(rows.query("model == 'a' and epoch == 2")["test_acc"].item())
    assert '"world_size": 2' in (run_dir / "env.json").read_text()


def test_a_model_failing_on_one_rank_is_quarantined_on_every_rank(two_ranks):
    _, run_dir = two_ranks
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("model")
    assert board.loc["nan1", "status"] == "diverged" and board.loc["nan1", "stopped_at"] == "epoch 1 step 3"
    assert board.loc["raise1", "status"] == "failed" and board.loc["raise1", "stopped_at"] == "epoch 1 step 3"
    assert board.loc["a", "status"] == board.loc["c", "status"] == "done"
    error = (run_dir / "errors" / "raise1.txt").read_text()
    assert error.startswith("failed at epoch 1 step 3") and "on rank 1 of 2" in error and "boom from ExplodesAfter" in error
    assert history(run_dir).query("model == 'nan1'")["epoch"].tolist() == [1]  # left the pass on both ranks


def test_a_lost_worker_is_restarted_by_torchrun_and_resumes_bitwise(two_ranks, tmp_path):
    """Rank 1 dies (SIGKILL) mid-epoch 2; torchrun restarts both workers, which resume from
    the last step checkpoint on their own (TORCHELASTIC_RESTART_COUNT > 0)."""
    config, reference = two_ranks
    run_dir = tmp_path / "run"
    # 2 test_mlp models -> 2 forwards per step; forward 37 is epoch 2, step 5 (checkpoint at 4).
    proc = torchrun("run", config, "--out", run_dir, "-q", "--no-plots", env={"KILL_AT_STEP": "37", "KILL_RANK": "1"}, restarts=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restart" in proc.stderr.lower()  # torchrun's own log of the restart
    pd.testing.assert_frame_equal(history(run_dir), history(reference), check_exact=True)


def test_resuming_with_another_number_of_processes_is_refused(two_ranks):
    config, run_dir = two_ranks
    proc = launch("run", config, "--out", run_dir, "-q", "--resume")  # one process, no torchrun
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {run_dir} was checkpointed by 2 process(es); resume it with as many (now 1)"


def test_compare_run_nproc_starts_torchrun_and_maps_exit_codes(tmp_path):
    raw = digits_config([{"name": "m", "arch": "mlp", "args": {"hidden": [8]}}], epochs=1, batch_size=100, subset=300)
    raw["experiment"]["grad_histograms"] = False
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "compare", "run", str(config), "--out", str(tmp_path / "run"), "-q", "--no-plots", "--nproc", "2"]
    ok = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1
    assert len([e for e in (tmp_path / "run" / "tb" / "m").glob("events.out.tfevents.*") if not e.name.endswith(".compare-views")]) == 1
    bad = subprocess.run([*cmd[:-2], "--set", "data.batch_sized=3", "--nproc", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "did you mean 'batch_size'" in bad.stderr


# ---------------------------------------------------------------- no processes needed


@pytest.mark.parametrize("n, batch, world, skip_steps", [(1347, 100, 2, 0), (1347, 64, 3, 5), (10, 4, 2, 1)])
def test_sharded_batches_are_the_single_process_batches_cut_in_slices(n, batch, world, skip_steps):
    def sampler():
        s = ResumableRandomSampler(range(n), generator=torch.Generator().manual_seed(7))
        s.skip = skip_steps * batch
        return s

    order = list(sampler())
    whole = [order[i : i + batch] for i in range(0, len(order), batch)]
    shards = [list(ShardedBatchSampler(sampler(), batch, rank, world)) for rank in range(world)]
    assert all(len(s) == len(whole) for s in shards)
    for step, expected in enumerate(whole):
        assert [i for rank in range(world) for i in shards[rank][step]] == expected
        assert max(len(s[step]) for s in shards) - min(len(s[step]) for s in shards) <= 1


def test_test_shards_cover_every_sample_once_in_order():
    for n, world in [(450, 2), (450, 4), (3, 2)]:
        assert [i for r in range(world) for i in shard_bounds(n, r, world)] == list(range(n))


def test_a_batch_that_would_leave_a_rank_empty_is_refused():
    cfg = SimpleNamespace(source="exp.toml", data=SimpleNamespace(batch_size=100))
    check_sharding(cfg, SimpleNamespace(train=range(1347)), 2)  # last batch 47: fine
    with pytest.raises(DataError, match="last batch holds 1"):
        check_sharding(cfg, SimpleNamespace(train=range(1301)), 2)
    check_sharding(cfg, SimpleNamespace(train=range(1301)), 1)


def test_the_batch_is_copied_once_per_device_not_once_per_model():
    x, y = torch.randn(4, 3), torch.arange(4)
    slot = lambda device, live=True: SimpleNamespace(device=torch.device(device), live=live)  # noqa: E731
    batch = to_devices(x, y, [slot("cpu"), slot("meta"), slot("meta"), slot("cpu"), slot("meta", live=False)])
    assert set(batch) == {torch.device("cpu"), torch.device("meta")}
    assert batch[torch.device("cpu")][0] is x  # already there: not copied at all
    assert batch[torch.device("meta")][0].device.type == "meta"


def test_model_device_is_validated():
    raw = digits_config([{"name": "m", "arch": "mlp", "device": "gpu:1"}, {"name": "n", "arch": "mlp", "device": "cpu"}])
    with pytest.raises(ConfigError, match=r"model\.m\.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu:1'"):
        config_from_dict(raw)
    raw["model"][0]["device"] = "cuda:1"
    assert [m.device for m in config_from_dict(raw).models] == ["cuda:1", "cpu"]
    assert config_from_dict(raw).to_dict()["model"][1]["device"] == "cpu"


def test_a_model_on_its_own_device_trains_like_the_others(run):
    """One process, models on explicit devices (CPU here; cuda:N on a GPU machine)."""
    model = {"name": "m", "arch": "mlp", "args": {"hidden": [16]}, "seed": 3}
    plain = run(digits_config([model], epochs=1), "plain").history
    placed = run(digits_config([model | {"device": "cpu"}], epochs=1), "placed").history
    pd.testing.assert_frame_equal(plain[METRICS], placed[METRICS], check_exact=True)

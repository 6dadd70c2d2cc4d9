"""Shards (runner/run/shards.py) and their merge (runner/run/merge.py): models cut into shards,
trained as separate jobs and merged, give the unsharded run bitwise on CPU (history and
leaderboard without their wall-clock columns, predictions, weights), also when a shard is
killed mid-epoch and resumed; incomplete, foreign and racing shard sets are refused (exit 2).
Runs go through tests/launcher.py's forking `--trials` process (one Python start for all)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from compare.config import tomlio
from compare.run.shards import assign, parse_shard
from tests.helpers import cli, digits_config, killable, mlp

# Wall-clock columns: the only ones a sharded run may differ in.
TIMING = {"time_s", "eval_time_s", "samples_per_s", "data_time_s", "train_time_s"}
MODELS = [killable("a"), killable("b", args={"hidden": [48], "dropout": 0.3}), killable("c", args={"hidden": [16], "dropout": 0.1}), killable("d", seed=7)]


def config(tmp: Path, name: str = "exp.toml", models=MODELS, **experiment) -> Path:
    raw = digits_config(models, epochs=2, batch_size=100, eval_batch_size=100, subset=400, test_subset=100, val_fraction=0.1)
    raw["experiment"] |= {"checkpoint_every_steps": 2, "output_dir": str(tmp / "runs")} | experiment
    path = tmp / name
    path.write_text(tomlio.dumps(raw))
    return path


def assert_same_run(merged: Path, reference: Path) -> None:
    for name in ("history.csv", "leaderboard.csv"):
        got, want = pd.read_csv(merged / name), pd.read_csv(reference / name)
        assert list(got.columns) == list(want.columns), name
        kept = [c for c in want.columns if c not in TIMING]
        pd.testing.assert_frame_equal(got[kept], want[kept], check_exact=True)
    assert list(pd.read_csv(merged / "history.csv")["model"].unique()) == ["a", "b", "c", "d"]  # config order
    for name in ("config.toml", "models.csv", "val_indices.csv"):
        assert (merged / name).read_bytes() == (reference / name).read_bytes(), name
    def outputs(run):  # predictions and weights, not checkpoints nor --place models' shard folders
        return sorted(p.relative_to(run) for p in run.rglob("*") if p.suffix in (".npz", ".pt") and not {"checkpoints", ".shards"} & set(p.relative_to(run).parts))

    files = outputs(reference)
    assert files and files == outputs(merged)
    for rel in files:
        if rel.suffix == ".npz":
            with np.load(reference / rel) as want, np.load(merged / rel) as got:
                assert want.files == got.files and all(np.array_equal(want[k], got[k]) for k in want.files), rel
        else:
            want, got = torch.load(reference / rel, weights_only=True), torch.load(merged / rel, weights_only=True)
            assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), rel
    assert sorted(p.name for p in (merged / "tb").iterdir() if p.is_dir()) >= ["a", "b", "c", "d"]


def test_shards_merged_equal_the_unsharded_run_bitwise_also_after_a_kill(trials, tmp_path):
    """One test (the runs are its cost): the unsharded run, its two shards merged; the shards
    read as one run by `compare leaderboard`; shard 2 killed mid-epoch, refused by merge until
    it is resumed, then merged again: every merge equals the unsharded run bitwise."""
    cfg = config(tmp_path)
    for args in ([], ["--shard", "1/2"], ["--shard", "2/2"]):
        code, log = trials("run", cfg, *args, "-q", "--no-plots")
        assert code == 0, log
    runs = tmp_path / "runs"
    reference, shards = runs / "t", [runs / "t.shard-1-of-2", runs / "t.shard-2-of-2"]
    records = [json.loads((s / "env.json").read_text())["shard"] for s in shards]
    assert [r["index"] for r in records] == [1, 2] and sorted(records[0]["models"] + records[1]["models"]) == ["a", "b", "c", "d"]
    assert records[0]["assignment"] == records[1]["assignment"] and records[0]["config_sha256"] == records[1]["config_sha256"]

    result = cli("merge", *shards, "--out", tmp_path / "merged", "--no-plots")
    assert result.exit_code == 0, result.stderr
    assert_same_run(tmp_path / "merged", reference)
    env = json.loads((tmp_path / "merged" / "env.json").read_text())
    assert env["merged_from"]["shards"] == 2 and "shard" not in env
    code, log = trials("resume", tmp_path / "merged", "--no-plots", "-q")  # a merged run is a finished run
    assert code == 0 and "already finished" in log, log

    listing = {s: sorted(p.relative_to(s) for p in s.rglob("*")) for s in shards}
    for out in (shards[0], shards[1], shards[0] / "inside", tmp_path / "runs"):  # is, lies inside, holds a shard
        refused = cli("merge", *shards, "--out", out, "--overwrite", "--no-plots")
        assert refused.exit_code == 2 and "merge into another folder" in refused.stderr and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert {s: sorted(p.relative_to(s) for p in s.rglob("*")) for s in shards} == listing and not (shards[0] / "inside").exists()

    board = cli("leaderboard", *reversed(shards), "--format", "csv")  # the shards read as one run
    assert board.exit_code == 0, board.stderr
    got, want = pd.read_csv(io.StringIO(board.stdout)), pd.read_csv(reference / "leaderboard.csv")
    kept = [c for c in want.columns if c not in TIMING]
    pd.testing.assert_frame_equal(got[kept], want[kept], check_exact=True)
    plot = cli("plot", *shards)
    assert plot.exit_code == 2 and "--out" in plot.stderr

    killed = tmp_path / "killed"
    code, log = trials("run", cfg, "--shard", "2/2", "--out", killed, "-q", "--no-plots", KILL_AT_STEP="7")  # mid epoch 2
    assert code == -9, log
    refused = cli("merge", shards[0], killed, "--out", tmp_path / "early", "--no-plots")
    assert refused.exit_code == 2 and "has not finished" in refused.stderr and "compare resume" in refused.stderr
    assert not (tmp_path / "early").exists()
    code, log = trials("resume", killed, "-q", "--no-plots")
    assert code == 0, log
    result = cli("merge", shards[0], killed, "--out", tmp_path / "merged-after-kill", "--no-plots")
    assert result.exit_code == 0, result.stderr
    assert_same_run(tmp_path / "merged-after-kill", reference)


def fake_shard(folder: Path, index: int, count: int, config_text: str) -> Path:
    """What merge checks before it reads any checkpoint: shard.json and config.toml."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(config_text)
    (folder / "shard.json").write_text(json.dumps({"index": index, "count": count, "models": [f"m{index}"], "assignment": [[f"m{i}"] for i in range(1, count + 1)]}))
    return folder


def test_an_incomplete_or_foreign_shard_set_is_refused(tmp_path):
    text = config(tmp_path).read_text()
    one, two = fake_shard(tmp_path / "s1", 1, 2, text), fake_shard(tmp_path / "s2", 2, 2, text.replace("lr = 0.05", "lr = 0.2", 1))
    cases = [
        ((one,), "shard 2/2 missing"),
        ((one, one), "shard 1/2 given twice"),
        ((one, two), "has another config than shard 1/2"),
        ((one, two), "differs (0.05 vs 0.2)"),
        ((one, fake_shard(tmp_path / "s3", 2, 3, text)), "is one of 3 shards"),
        ((one, tmp_path), "not a shard's run directory"),
    ]
    for dirs, message in cases:
        result = cli("merge", *dirs, "--out", tmp_path / "out")
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, (message, result.stderr)
    assert not (tmp_path / "out").exists()


def test_shard_with_racing_is_refused_in_the_run_and_the_dry_run(tmp_path):
    cfg = config(tmp_path, models=[mlp("a"), mlp("b")], race={"min_epochs": 1})
    for extra in ([], ["--dry-run"]):
        result = cli("run", cfg, "--shard", "1/2", *extra)
        assert result.exit_code == 2 and "experiment.race" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_shows_the_assignment(tmp_path):
    result = cli("run", config(tmp_path, models=[mlp("a"), mlp("b", lr=0.05), mlp("c", dropout=0.0)]), "--shard", "2/2", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "shard 2/2: trains" in result.stdout and "shard 1/2:" in result.stdout and "t.shard-2-of-2" in result.stdout


@pytest.mark.parametrize("env, text, expected", [
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, "auto", (1, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, "auto", (4, 4)),
    ({"SLURM_ARRAY_TASK_ID": "2"}, "auto/3", (3, 3)),
    ({"JOB_COMPLETION_INDEX": "0"}, "auto/2", (1, 2)),
    ({}, "3/5", (3, 5)),
])
def test_shard_auto_reads_slurm_and_kubernetes(env, text, expected):
    shard = parse_shard(text, env)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize("env, text, named", [
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "auto", "SLURM_ARRAY_TASK_ID: expected an integer, got 'x'"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, "auto", "SLURM_ARRAY_TASK_ID: is 5"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "auto", "SLURM_ARRAY_TASK_COUNT: is not set"),
    ({"JOB_COMPLETION_INDEX": "1"}, "auto", "JOB_COMPLETION_INDEX: is 1"),
    ({"JOB_COMPLETION_INDEX": "2"}, "auto/2", "JOB_COMPLETION_INDEX: is 2"),
    ({}, "auto", "neither SLURM_ARRAY_TASK_ID"),
    ({}, "3/2", "1 <= I <= N"),
    ({}, "0/2", "1 <= I <= N"),
])
def test_bad_shard_values_are_one_line_naming_the_variable(env, text, named, monkeypatch):
    for key in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = cli("run", "experiments/digits.toml", "--shard", text)
    assert result.exit_code == 2 and named in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_the_assignment_balances_cost_and_keeps_groups_whole():
    costs = {"a": 10.0, "b": 1.0, "c": 1.0, "d": 8.0, "e": 1.0}
    order = list(costs)
    assert assign([(n,) for n in order], costs, 2, order) == (("a", "e"), ("b", "c", "d"))
    assert assign([("a", "d"), ("b",), ("c",), ("e",)], costs, 2, order) == (("a", "d"), ("b", "c", "e"))  # a fusable pair stays whole
    assert assign([(n,) for n in order], costs, 2, order) == assign([(n,) for n in order], dict(costs), 2, order)  # a function of the costs alone


@pytest.mark.parametrize("manifest", ["missing", "stale"])
def test_a_shard_whose_checkpoint_its_manifest_cannot_vouch_for_is_refused_in_merge_words(tmp_path, manifest):
    """Issue 36, 26c: merge said "cannot resume" and "the file is damaged"."""
    from compare.rundir.layout import CHECKPOINTS  # noqa: PLC0415

    text = config(tmp_path).read_text()
    one, two = fake_shard(tmp_path / "s1", 1, 2, text), fake_shard(tmp_path / "s2", 2, 2, text)
    (one / CHECKPOINTS).mkdir()
    torch.save({"finished": True}, one / CHECKPOINTS / "checkpoint.pt")  # a zip whose checksums pass
    if manifest == "stale":
        (one / CHECKPOINTS / "manifest.json").write_text(json.dumps({"format": 1, "checkpoints": [{"where": "x", "sha256": "0" * 64}]}))
    result = cli("merge", one, two, "--out", tmp_path / "out")
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and line.startswith(f"error: cannot merge shard {one}: "), result.stderr
    assert "resume" not in line and "damaged" not in line and "rerun the shard" in line, line
    assert not (tmp_path / "out").exists()

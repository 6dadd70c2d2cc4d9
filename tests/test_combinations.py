"""Features that work where they meet: the options users combine, pairwise.

Every pair of values of any two factors below runs at least once, in rows the test generates
itself (a greedy all-pairs cover, deterministic). Each row runs the CLI on digits (tiny test
models) and must finish; a row with `resume` is killed mid-run first (a kill switch of
tests/launcher.py) and resumed, and its history must equal the same combination run without
interruption. An `internal error` (exit 1) is never acceptable. docs/data-path.md shows the rows.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from compare.config import tomlio
from compare.assemble.validate import config_from_dict
from tests.helpers import LAUNCHER, ROOT, history, launch

FACTORS: dict[str, tuple] = {
    "cache": ("none", "memory"),
    "fuse": ("off", "on"),
    "precision": ("32", "bf16-mixed"),
    "seeds": (1, 2),
    "early_stopping": (False, True),  # True: on val_macro_f1, so with a val split (data.val_fraction)
    "sweep": (False, True),  # True: also [report] metrics and rank_by = "macro_f1"
    "resume": (False, True),  # killed mid-run, then `compare resume`
    "torchrun": (False, True),  # 2 CPU processes (gloo)
}
# What a value adds to a row's cost, in units of one plain run: ties between rows that cover as
# many new pairs go to the cheaper one, so torchrun runs only as often as pairwise needs.
COST = {"resume": 1.0, "torchrun": 3.0, "precision": 0.5, "seeds": 0.5}
EPOCHS = 3  # early stopping leaves the pass after epoch 2; epoch 3 trains the others


def all_pairs(factors: dict[str, tuple], cost: dict[str, float]) -> list[dict]:
    """Rows covering every pair of values of any two factors: repeatedly the full row that
    covers the most uncovered pairs, the cheapest of those, the first in product order."""
    names = list(factors)

    def pairs(row: dict) -> set:
        return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)}

    def price(row: dict) -> float:  # a factor's second value is the costly one
        return sum(cost.get(n, 0.0) for n in names if row[n] == factors[n][1])

    candidates = [dict(zip(names, values)) for values in itertools.product(*factors.values())]
    uncovered = set().union(*(pairs(row) for row in candidates))
    rows = []
    while uncovered:
        best = max(candidates, key=lambda row: (len(pairs(row) & uncovered), -price(row)))
        rows.append(best)
        uncovered -= pairs(best)
    return rows


ROWS = all_pairs(FACTORS, COST)


def row_id(row: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in row.items())


def test_the_rows_cover_every_pair_of_values():
    for (a, values_a), (b, values_b) in itertools.combinations(FACTORS.items(), 2):
        for va, vb in itertools.product(values_a, values_b):
            assert any(row[a] == va and row[b] == vb for row in ROWS), (a, va, b, vb)
    assert len(ROWS) <= 10  # 8 two-valued factors: a greedy cover needs 6 to 10 rows, not 2**8
    assert sum(row["torchrun"] for row in ROWS) == 2  # the fewest that pair torchrun with every value
    assert all_pairs(FACTORS, COST) == ROWS  # deterministic


def model(name: str, lr: float, arch: str = "test_mlp", **extra) -> dict:
    return {"name": name, "arch": arch, "args": {"hidden": [8], "dropout": 0.1}, "optimizer": {"name": "SGD", "lr": lr, "momentum": 0.9}} | extra


def raw_config(row: dict, arch: str = "test_mlp") -> dict:
    """Digits, 200 train samples in batches of 50 (with a val split: 250 less the 50 held out),
    two or three same-architecture models."""
    a = model("a", 0.1, arch) | ({"sweep": {"optimizer.lr": [0.1, 0.05]}} if row["sweep"] else {})
    # b never stops early: the others leave the pass after epoch 2, b trains epoch 3 alone.
    b = model("b", 0.05, arch) | ({"early_stopping": {"metric": "val_loss", "patience": 9}} if row["early_stopping"] else {})
    experiment = {
        "name": "combo", "seed": 0, "epochs": EPOCHS, "device": "cpu", "grad_histograms": False,
        "fuse": row["fuse"], "precision": row["precision"], "seeds": [0, 1][: row["seeds"]],
        "checkpoint_every_steps": 1,
    }
    if row["early_stopping"]:  # on a metric higher is better of, by a min_delta none can beat: no improvement after epoch 1
        experiment["early_stopping"] = {"metric": "val_macro_f1", "patience": 1, "min_delta": 10.0}
    data = {"dataset": "digits", "batch_size": 50, "eval_batch_size": 100, "subset": 200, "test_subset": 100, "cache": row["cache"]}
    if row["early_stopping"]:  # 50 of 250 held out: 200 train samples either way
        data |= {"subset": 250, "val_fraction": 0.2}
    raw = {"experiment": experiment, "data": data, "loss": {"name": "CrossEntropyLoss"}, "model": [a, b]}
    if row["sweep"]:  # the report's own metrics ride with the sweep rows (docs/metrics.md)
        raw["report"] = {"metrics": ["acc", "macro_f1", "nll"], "rank_by": "macro_f1"}
    return raw


def torchrun(*args, env=None, restarts=0) -> subprocess.CompletedProcess:
    full_env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | (env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", f"--max-restarts={restarts}", str(LAUNCHER), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def no_internal_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 1 and "internal error" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr[-3000:]


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_the_combination_runs_to_completion(row, tmp_path):
    raw = raw_config(row)
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    run_dir = tmp_path / "run"
    args = ("run", config, "--out", run_dir, "-q", "--no-plots")
    kill = {"KILL_AT_STEP": "7"}  # the 7th training forward: mid-epoch 1 unfused, mid-epoch 2 fused
    if row["torchrun"]:  # rank 1 dies; torchrun restarts both workers, which resume
        proc = torchrun(*args, env=kill | {"KILL_RANK": "1"} if row["resume"] else None, restarts=1 if row["resume"] else 0)
        assert proc.returncode == 0, no_internal_error(proc)
    elif row["resume"]:
        killed = launch(*args, env=kill)
        assert killed.returncode == -signal.SIGKILL, no_internal_error(killed)
        proc = launch("resume", run_dir, "-q", "--no-plots")
        assert proc.returncode == 0, no_internal_error(proc)
    else:
        proc = launch(*args)
        assert proc.returncode == 0, no_internal_error(proc)

    got = history(run_dir)
    names = ["a[lr=0.1]", "a[lr=0.05]", "b"] if row["sweep"] else ["a", "b"]
    last = got.groupby(["model", "seed"]).last()
    assert sorted(last.index) == sorted(itertools.product(names, range(row["seeds"])))
    for name, seed in last.index:
        stops = row["early_stopping"] and name != "b"
        assert (last.loc[(name, seed), "epoch"], last.loc[(name, seed), "status"]) == ((2, "early_stopped") if stops else (EPOCHS, "done"))
    if row["sweep"]:  # ranked by the report's own metric, each model's value kept per epoch
        board = pd.read_csv(run_dir / "leaderboard.csv")
        assert list(board["test_macro_f1_mean"]) == sorted(board["test_macro_f1_mean"], reverse=True)
        kept = ["test_macro_f1", "test_nll"] + (["val_macro_f1"] if row["early_stopping"] else [])  # val: with a val split
        assert pd.read_csv(run_dir / "history.csv")[kept].notna().all().all()
    models = pd.read_csv(run_dir / "models.csv")
    fused = models["fused"].fillna("") if "fused" in models else pd.Series([""] * len(models))
    assert (fused != "").all() if row["fuse"] == "on" and not row["torchrun"] else (fused == "").all()
    if row["resume"] and not row["torchrun"]:  # the same combination, uninterrupted (in this process: cheap)
        from compare.run.experiment import Experiment  # noqa: PLC0415

        Experiment(config_from_dict(raw_config(row, arch="mlp"))).run(tmp_path / "whole")
        pd.testing.assert_frame_equal(got, history(tmp_path / "whole"), check_exact=True)


def test_docs_show_the_generated_rows():
    lines = (ROOT / "docs" / "data-path.md").read_text().splitlines()
    header = "| # | " + " | ".join(FACTORS) + " |"
    table = lines[lines.index(header) + 2 :][: len(ROWS) + 1]
    shown = [{True: "yes", False: "no"}.get(v, str(v)) if isinstance(v, bool) else str(v) for row in ROWS for v in row.values()]
    cells = [cell.strip() for line in table if line.startswith("|") for cell in line.strip("|").split("|")[1:]]
    assert cells == shown

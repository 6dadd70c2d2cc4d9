"""The checks behind benchmarks/gpu_distributed_check.sh (run from the repository root)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compare.config import tomlio  # noqa: E402

OUT = Path(sys.argv[1])
RESULTS: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "gpus": torch.cuda.device_count()}
METRICS = ["model", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean", "status"]


def config(path: Path, models: list[dict], **experiment) -> Path:
    raw = {
        "experiment": {"name": "gpu", "epochs": 2, "device": "cuda", "grad_histograms": False} | experiment,
        "data": {"dataset": "digits", "batch_size": 100, "eval_batch_size": 150},
        "loss": {"name": "CrossEntropyLoss"},
        "model": models,
    }
    path.write_text(tomlio.dumps(raw))
    return path


def mlp(name: str, **extra) -> dict:
    return {"name": name, "arch": "mlp", "args": {"hidden": [64]}, "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9}, "seed": 1} | extra


def sh(*cmd, env=None) -> subprocess.CompletedProcess:
    started = time.time()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=os.environ | (env or {}), capture_output=True, text=True, timeout=150)
    print(f"$ {' '.join(map(str, cmd))}  -> rc {proc.returncode} in {time.time() - started:.1f}s", flush=True)
    if proc.returncode not in (0, 3):
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
    return proc


def check(name: str, ok: bool, detail="") -> None:
    RESULTS[name] = {"ok": bool(ok), "detail": detail}
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)


def placement() -> None:
    """One process, several devices: count host-to-device copies of the batch per step."""
    from torch.utils.data import DataLoader

    from compare.datasets import create_dataset
    from compare.engine import loop as engine
    from compare.assemble.validate import config_from_dict
    from compare.assemble.slots import build_slot
    from compare.engine.rng import RngStream

    devices = ["cuda:0", "cuda", "cuda:0", "cpu"] + (["cuda:1"] if torch.cuda.device_count() > 1 else [])
    cfg = config_from_dict({"experiment": {"device": "cuda"}, "data": {"dataset": "digits"}, "model": [mlp(f"m{i}", device=d) for i, d in enumerate(devices)]})
    slots = [build_slot(cfg, m, 0, (1, 8, 8), 10, torch.device(m.device)) for m in cfg.models]
    train, _ = create_dataset("digits").load_data()
    loader = DataLoader(train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0))
    copies, original = [], torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        moved = original(self, *args, **kwargs)
        if self.dim() > 0 and self.device.type == "cpu" and moved.device.type == "cuda":  # a batch, not a 0-d health flag
            copies.append(str(moved.device))
        return moved

    torch.Tensor.to = counting_to
    try:
        engine.train_one_epoch(slots, loader, torch.nn.CrossEntropyLoss(), RngStream(0, torch.device("cpu")), 1)
    finally:
        torch.Tensor.to = original
    torch.cuda.synchronize()
    steps = len(loader)
    gpus = len({engine.canonical(s.device) for s in slots if s.device.type == "cuda"})
    check("placement_batch_copied_once_per_device", len(copies) == 2 * gpus * steps, f"{len(copies)} host-to-device copies for {steps} steps, {gpus} GPU(s), {len(slots)} models (x and y: expect {2 * gpus * steps})")
    check("placement_models_stay_on_their_devices", all(str(next(s.model.parameters()).device).startswith(str(s.device)) for s in slots) and all(s.live for s in slots))

    mixed = config(OUT / "mixed.toml", [mlp("gpu_a"), mlp("gpu_b", device="cuda:0"), mlp("cpu_c", device="cpu")], epochs=1)
    proc = sh(sys.executable, "-m", "compare", "run", mixed, "--out", OUT / "mixed", "-q", "--overwrite")
    board = pd.read_csv(OUT / "mixed" / "leaderboard.csv") if proc.returncode == 0 else None
    check("placement_cli_run_on_mixed_devices", proc.returncode == 0 and (board["status"] == "done").all(), proc.stderr[-300:] if proc.returncode else "")


def torchrun_nccl() -> None:
    """torchrun, 1 process, nccl: DDP-wrapped slots on cuda:0."""
    models = [mlp("a"), mlp("b", args={"hidden": [32], "dropout": 0.2}, seed=2)]
    plain_cfg = config(OUT / "plain.toml", models, checkpoint_every_steps=4)
    sh(sys.executable, "-m", "compare", "run", plain_cfg, "--out", OUT / "plain", "-q", "--overwrite")
    launcher = ROOT / "tests" / "launcher.py"
    bad = [
        {"name": "nan0", "arch": "test_explodes", "args": {"steps": 3, "mode": "nan", "on_rank": 0}},
        {"name": "raise0", "arch": "test_explodes", "args": {"steps": 3, "mode": "raise", "on_rank": 0}},
    ]
    ddp_cfg = config(OUT / "ddp.toml", [m | {"arch": "test_mlp"} for m in models] + bad, checkpoint_every_steps=4)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    proc = sh(*run, launcher, "run", ddp_cfg, "--out", OUT / "ddp", "-q", "--overwrite")
    if proc.returncode != 0:
        check("nccl_torchrun_run", False, proc.stderr[-500:])
        return
    env = json.loads((OUT / "ddp" / "env.json").read_text())
    check("nccl_torchrun_run", env["world_size"] == 1 and env["device"].startswith("cuda"), f"device {env['device']}, world_size {env['world_size']}")
    plain = pd.read_csv(OUT / "plain" / "history.csv")[METRICS]
    ddp = pd.read_csv(OUT / "ddp" / "history.csv")[METRICS]
    same = ddp[ddp["model"].isin(["a", "b"])].reset_index(drop=True)
    floats = ["train_loss", "test_loss", "grad_norm_mean"]
    diff = float((plain[floats] - same[floats]).abs().to_numpy().max())
    check("nccl_one_rank_equals_plain_run", diff < 1e-5 and plain["test_acc"].tolist() == same["test_acc"].tolist(), f"max metric difference {diff:.3g}")
    board = pd.read_csv(OUT / "ddp" / "leaderboard.csv").set_index("model")
    check("nccl_quarantine", board.loc["nan0", "status"] == "diverged" and board.loc["raise0", "status"] == "failed" and board.loc["a", "status"] == "done", board["status"].to_dict())

    killed = sh(*run, "--max-restarts=1", launcher, "run", ddp_cfg, "--out", OUT / "restarted", "-q", "--overwrite", env={"KILL_AT_STEP": "37", "KILL_RANK": "0"})
    if killed.returncode == 0:
        resumed = pd.read_csv(OUT / "restarted" / "history.csv")[METRICS]
        # The diverged model's NaN losses must line up too; compare the finite values.
        same_nans = resumed[floats].isna().equals(ddp[floats].isna())
        diff = float(np.nanmax((resumed[floats] - ddp[floats]).abs().to_numpy()))
        check("nccl_restart_resumes", same_nans and diff <= 1e-6 and resumed["status"].tolist() == ddp["status"].tolist(), f"max difference to the uninterrupted run {diff:.3g} (NaNs in the same places: {same_nans})")
    else:
        check("nccl_restart_resumes", False, killed.stderr[-500:])


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script is for a GPU machine")
    for step in (placement, torchrun_nccl):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - report every check, then fail
            check(step.__name__, False, f"{type(err).__name__}: {err}")
    (OUT / "gpu_distributed_check.json").write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
    failed = [k for k, v in RESULTS.items() if isinstance(v, dict) and not v["ok"]]
    print("FAILED: " + ", ".join(failed) if failed else "all GPU checks passed")
    sys.exit(1 if failed else 0)

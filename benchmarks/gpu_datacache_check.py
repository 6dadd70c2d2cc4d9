"""GPU check of the cached data path (data.cache), on a generated class-folder dataset.

    python benchmarks/gpu_datacache_check.py OUTDIR

1. "device" (CUDA) without augmentation gives the DataLoader path's batches (labels equal,
   pixels within 1e-6); 2. with augmentation, "device" on CUDA and "memory" on the CPU give the
   same batches (offsets drawn on the CPU); 3. one epoch of loader time per path; 4. a short run
   with cache = "memory" and "device" on CUDA. Writes OUTDIR/gpu_datacache_check.json.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compare.resolve import components
from compare.assemble.validate import config_from_dict
from compare.data.cache import load_cached_data
from compare.engine.loop import seeded_batches
from compare.run.experiment import Experiment
from compare.run.shared_pass import SharedPass

CUDA = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a smoke test of the script


def make_folder(root: Path, train: int = 2500, test: int = 500) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label, cls in enumerate(("cat", "dog")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray((rng.integers(0, 128, (32, 32, 3)) + 100 * label).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


def config(root: Path, cache: str, augment: bool, device: str, workers: int = 0) -> dict:
    return {
        "experiment": {"name": "gpu", "device": device, "epochs": 1, "grad_histograms": False},
        "data": {"dataset": "cifar10", "root": str(root), "batch_size": 256, "eval_batch_size": 500, "cache": cache, "augment": augment, "num_workers": workers},
        "model": [{"name": "tudui", "arch": "tudui"}, {"name": "lenet", "arch": "lenet", "optimizer": {"name": "Adam", "lr": 1e-3}}],
    }


def shared_pass(raw: dict) -> SharedPass:
    cfg = config_from_dict(raw)
    device = torch.device(cfg.experiment.device)
    d = cfg.data
    data = components.load_dataset(d, seed=0) if d.cache == "none" else load_cached_data(d, ".", 0, device)
    return SharedPass(cfg, 0, [], data, None, device)


def epoch(shared: SharedPass) -> tuple[list, float]:
    start = time.perf_counter()
    batches = [(x.to(CUDA, non_blocking=True), y.to(CUDA, non_blocking=True)) for x, y in seeded_batches(shared.train_loader, shared.data_rng)]
    if CUDA.type == "cuda":
        torch.cuda.synchronize()
    return batches, time.perf_counter() - start


def main(out: Path) -> None:
    report: dict = {"device": torch.cuda.get_device_name() if CUDA.type == "cuda" else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "data", *((2500, 500) if CUDA.type == "cuda" else (150, 30)))
        plain, _ = epoch(shared_pass(config(root, "none", False, CUDA.type)))
        cached, _ = epoch(shared_pass(config(root, "device", False, CUDA.type)))
        report["same_labels"] = all(torch.equal(a[1], b[1]) for a, b in zip(plain, cached, strict=True))
        report["max_pixel_diff_device_vs_dataloader"] = max(float((a[0] - b[0]).abs().max()) for a, b in zip(plain, cached))
        on_gpu, _ = epoch(shared_pass(config(root, "device", True, CUDA.type)))
        on_cpu, _ = epoch(shared_pass(config(root, "memory", True, "cpu")))
        report["max_pixel_diff_augmented_cuda_vs_cpu"] = max(float((a[0] - b[0]).abs().max()) for a, b in zip(on_gpu, on_cpu, strict=True))
        seconds = {}
        for name, cache, workers in (("pil_workers4", "none", 4), ("memory", "memory", 0), ("device", "device", 0)):
            shared = shared_pass(config(root, cache, True, CUDA.type, workers))
            epoch(shared)  # warm-up: workers started, kernels loaded
            seconds[name] = min(epoch(shared)[1] for _ in range(2))
        report["epoch_loader_seconds_5000_images_augmented"] = seconds
        for cache in ("memory", "device"):
            result = Experiment(config_from_dict(config(root, cache, True, CUDA.type))).run(Path(tmp) / f"run-{cache}", plots=False)
            report[f"run_{cache}"] = result.history[["model", "test_acc", "data_time_s", "status"]].to_dict("records")
    report["ok"] = report["same_labels"] and report["max_pixel_diff_device_vs_dataloader"] <= 1e-6 and report["max_pixel_diff_augmented_cuda_vs_cpu"] <= 1e-6 and all(
        r["status"] == "done" for c in ("memory", "device") for r in report[f"run_{c}"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_datacache_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

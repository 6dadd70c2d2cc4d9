"""Issue 26's GPU benchmark: 8 ResNet-18 (width 64) models on CIFAR-10 JPEGs, trained three ways
over the N GPUs of one machine (N = torch.cuda.device_count()):

  placement  compare run CFG --nproc N --place models   each rank trains its share of the models
  ddp        compare run CFG --nproc N                  every rank trains every model, batch split
  devices    compare run CFG, [[model]] device cuda:i   one process, the models round-robin on GPUs

End-to-end wall time of each command (start-up, training, evaluation, reports), the modes
interleaved and repeated; prints each mode's median, its throughput (model-images/s) and the
ratios to `devices` with 95% bootstrap intervals, and writes them to OUT.

    PYTHONPATH=. python3 benchmarks/gpu_placement.py ROOT OUT [--repeats 3] [--epochs 2] [--subset 10000]
    PYTHONPATH=. python3 benchmarks/gpu_placement.py --smoke OUT   # the same script on the CPU: digits, 2 ranks, tiny ResNets

ROOT: an ImageFolder copy of CIFAR-10 (ROOT/{train,test}/<class>/*.jpg): `source
benchmarks/cifar_data.sh` extracts ../shared/data/cifar10-jpg.tar.gz (or $TARBALL) and sets $root.
A mode that fails is reported and the others go on.
Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from compare.config import tomlio
from shard_placement import bootstrap  # benchmarks/: the same paired bootstrap of a ratio of medians

ROOT = Path(__file__).resolve().parents[1]
MODES = ("placement", "ddp", "devices")


def config(folder: Path, args, gpus: int, devices: bool) -> Path:
    """8 models of one recipe, 8 seeds: equal costs, so any split of them is balanced."""
    optimizer = {"name": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    if args.smoke:
        experiment = {"device": "cpu"}
        data = {"dataset": "digits", "batch_size": 128, "eval_batch_size": 450}
        arch = {"arch": "resnet18", "args": {"width": 4}}
    else:
        experiment = {"device": "cuda", "precision": "bf16-mixed", "channels_last": True}
        data = {"dataset": "cifar10", "root": str(args.root), "download": False, "batch_size": 256, "eval_batch_size": 1000, "subset": args.subset, "cache": "device"}
        arch = {"arch": "resnet18", "args": {"width": 64}}
    models = []
    for i in range(8):
        model = {"name": f"r{i}", "seed": i, "optimizer": optimizer} | arch
        if devices and not args.smoke:
            model["device"] = f"cuda:{i % gpus}"
        models.append(model)
    raw = {
        "experiment": {"name": "placement", "seed": 0, "epochs": args.epochs, "grad_histograms": False, "output_dir": str(folder)} | experiment,
        "data": data,
        "loss": {"name": "CrossEntropyLoss"},
        "model": models,
    }
    path = folder / ("devices.toml" if devices else "ranks.toml")
    path.write_text(tomlio.dumps(raw))
    return path


def timed(mode: str, cfg: Path, out: Path, nproc: int) -> float | str:
    extra = {"placement": ["--nproc", str(nproc), "--place", "models"], "ddp": ["--nproc", str(nproc)], "devices": []}[mode]
    tick = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compare", "run", str(cfg), "--out", str(out), "-q", "--no-plots", *extra], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - tick
    return seconds if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="CIFAR-10 ImageFolder root (not with --smoke)")
    parser.add_argument("out", type=Path, help="file the results are written to")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10_000, help="training images per epoch")
    parser.add_argument("--smoke", action="store_true", help="CPU, digits, 2 ranks, width-4 ResNets: checks the script")
    args = parser.parse_args()
    if not args.smoke and (args.root is None or not torch.cuda.is_available()):
        raise SystemExit("needs a CUDA machine and ROOT (or --smoke on the CPU)")
    gpus = 2 if args.smoke else torch.cuda.device_count()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ranks_cfg, devices_cfg = config(Path(tmp), args, gpus, False), config(Path(tmp), args, gpus, True)
        for r in range(args.repeats):
            order = MODES if r % 2 == 0 else MODES[::-1]  # interleaved, alternating: drift hits all alike
            for mode in (m for m in order if m not in failures):
                took = timed(mode, devices_cfg if mode == "devices" else ranks_cfg, Path(tmp) / f"{mode}{r}", gpus)
                if isinstance(took, str):
                    failures[mode] = took
                else:
                    times[mode].append(took)
            print(f"repeat {r + 1}: " + ", ".join(f"{m} {times[m][-1]:.1f} s" for m in MODES if m not in failures and times[m]), flush=True)
    images = 1347 if args.smoke else args.subset
    work = 8 * images * args.epochs
    name = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    lines = [
        f"8 x resnet18 (width {4 if args.smoke else 64}), {args.epochs} epochs of {images} images, {gpus} x {name}, torch {torch.__version__}",
        f"{args.repeats} interleaved repeats; wall seconds of the whole command (start-up, training, evaluation, reports)",
    ]
    for mode in MODES:
        if mode in failures:
            lines.append(f"{mode}: failed ({failures[mode]})")
        else:
            median = statistics.median(times[mode])
            lines.append(f"{mode}: median {median:.2f} s = {work / median:,.0f} model-images/s  ({', '.join(f'{s:.1f}' for s in times[mode])})")
    if "devices" not in failures:
        for mode in ("placement", "ddp"):
            if mode not in failures:
                low, high = bootstrap(times["devices"], times[mode])
                ratio = statistics.median(times["devices"]) / statistics.median(times[mode])
                lines.append(f"throughput {mode} / devices: {ratio:.3f}, 95% bootstrap interval [{low:.3f}, {high:.3f}]")
    lines.append(f"load average at the end (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

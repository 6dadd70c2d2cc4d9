"""Models over 2 processes (`compare run --nproc 2 --place models`) against 1 process, on the
CPU: 4 equal models (mlp 1024x1024 on digits), batch 128, end-to-end wall time of the command
(start-up, training, each rank's reports, rank 0's merge and reports), interleaved repeats.

    PYTHONPATH=. .venv/bin/python benchmarks/shard_placement.py [REPEATS] [EPOCHS]

Throughput = models x train samples x epochs / wall seconds. Prints and writes
benchmarks/results/cpu-issue26-shard-placement-<EPOCHS>ep.txt: the medians, their ratio and a 95%
percentile bootstrap interval of the ratio (repeats resampled in pairs). Not a test.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from compare.config import tomlio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # cpu-issue26-shard-placement-<epochs>ep.txt
TRAIN = 1347  # digits' train split (val_fraction 0)


def config(folder: Path, epochs: int) -> Path:
    model = {"arch": "mlp", "args": {"hidden": [1024, 1024], "dropout": 0.0}, "optimizer": {"name": "SGD", "lr": 0.05}}
    raw = {
        "experiment": {"name": "bench", "seed": 0, "epochs": epochs, "device": "cpu", "grad_histograms": False, "output_dir": str(folder)},
        "data": {"dataset": "digits", "batch_size": 128, "eval_batch_size": 512},
        "loss": {"name": "CrossEntropyLoss"},
        "model": [{"name": f"m{i}"} | model for i in range(4)],
    }
    path = folder / "bench.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def timed(args: list[str], env: dict | None = None) -> float:
    tick = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compare", *args], cwd=ROOT, capture_output=True, text=True, env=None if env is None else os.environ | env)
    seconds = time.perf_counter() - tick
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


def bootstrap(one: list[float], two: list[float], n: int = 10_000) -> tuple[float, float]:
    rng = random.Random(0)
    ratios = []
    for _ in range(n):
        pick = [rng.randrange(len(one)) for _ in one]
        ratios.append(statistics.median(one[i] for i in pick) / statistics.median(two[i] for i in pick))
    ratios.sort()
    return ratios[int(0.025 * n)], ratios[int(0.975 * n)]


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    one, two, single = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), epochs)
        for r in range(repeats):  # interleaved: a drift in the machine's load hits both alike
            one.append(timed(["run", str(cfg), "--out", f"{tmp}/one{r}", "-q", "--no-plots"]))
            two.append(timed(["run", str(cfg), "--nproc", "2", "--place", "models", "--out", f"{tmp}/two{r}", "-q", "--no-plots"]))
            single.append(timed(["run", str(cfg), "--out", f"{tmp}/single{r}", "-q", "--no-plots"], {"OMP_NUM_THREADS": "1"}))
            print(f"repeat {r + 1}: 1 process {one[-1]:.1f} s, 2 processes (--place models) {two[-1]:.1f} s, 1 process 1 thread {single[-1]:.1f} s", flush=True)
    work = 4 * TRAIN * epochs
    low, high = bootstrap(one, two)
    lo1, hi1 = bootstrap(single, two)
    lines = [
        f"compare run --nproc 2 --place models vs one process; 4 x mlp(1024, 1024) on digits, batch 128, {epochs} epochs, CPU",
        f"CPU: {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads in one process (torchrun gives each worker OMP_NUM_THREADS=1), torch {torch.__version__}",
        f"repeats (interleaved): {repeats}; wall seconds of the whole command, start-up and reports included",
        f"1 process:  median {statistics.median(one):.2f} s = {work / statistics.median(one):,.0f} model-samples/s  ({', '.join(f'{s:.1f}' for s in one)})",
        f"2 processes: median {statistics.median(two):.2f} s = {work / statistics.median(two):,.0f} model-samples/s  ({', '.join(f'{s:.1f}' for s in two)})",
        f"1 process, OMP_NUM_THREADS=1: median {statistics.median(single):.2f} s  ({', '.join(f'{s:.1f}' for s in single)})",
        f"throughput ratio (2 processes / 1 process), ratio of medians: {statistics.median(one) / statistics.median(two):.3f}, 95% bootstrap interval [{low:.3f}, {high:.3f}]",
        f"throughput ratio (2 processes / 1 process with 1 thread): {statistics.median(single) / statistics.median(two):.3f}, 95% bootstrap interval [{lo1:.3f}, {hi1:.3f}]",
        f"load average while measured (1, 5, 15 min, at the end): {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        "bounded by: 2 cores (one process already uses both through intra-op threads); each rank loads and decodes",
        "every batch itself; each rank starts Python and torch, builds every model once to assign them, and writes its",
        "shard's reports, and rank 0 then merges and writes the reports again (fixed costs, seconds).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / f"cpu-issue26-shard-placement-{epochs}ep.txt").write_text(text)


if __name__ == "__main__":
    main()

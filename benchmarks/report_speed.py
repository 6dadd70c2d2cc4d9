"""How long the leaderboard takes to build for a bootstrap metric (docs/metrics.md): a run
directory of N models x S test samples (10 classes, each model right on a different ~80 %),
then `compare leaderboard RUN --metric macro_f1` as a library call, timed (10,000 paired
resamples for the intervals and the tests, every model on the same resamples).

    PYTHONPATH=. python benchmarks/report_speed.py --models 16 --samples 10000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from compare.report.leaderboard import build
from compare.report.run_data import load_run
from compare.run.sinks import write_predictions


def make_run(folder: Path, models: int, samples: int, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    target = rng.integers(0, classes, samples)
    rows = []
    for m in range(models):
        top1 = np.where(rng.random(samples) < 0.75 + 0.01 * m, target, rng.integers(0, classes, samples))
        kept = {"top1": torch.as_tensor(top1, dtype=torch.int16)}
        write_predictions(folder, f"m{m}", 0, torch.as_tensor(target), final=(1, kept), best=None)
        rows.append({"model": f"m{m}", "seed": 0, "epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": float(np.mean(top1 == target)), "status": "done"})
    pd.DataFrame(rows).to_csv(folder / "history.csv", index=False)
    (folder / "env.json").write_text(json.dumps({"test_samples": samples, "classes": [str(c) for c in range(classes)], "task": {"kind": "classification", "width": classes}}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--metric", default="macro_f1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.models, args.samples)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            board = build([load_run(run)], metric=args.metric)
            times.append(time.perf_counter() - start)
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    print(f"{args.models} models x {args.samples} test samples, --metric {args.metric}: {board.evidence.test}")
    print(f"leaderboard built in {np.median(times):.2f} s (median of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()

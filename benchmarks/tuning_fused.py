"""How much faster experiments/tuning.toml runs with its families fused (`experiment.fuse =
"auto"`, the 8 trials of a family in one vmapped step) than one model at a time (`"off"`):
the whole `compare run`, the two modes interleaved, repeated; the median of the paired
wall-clock ratios (off / auto) with a 95% bootstrap interval.

    PYTHONPATH=. python benchmarks/tuning_fused.py --repeats 5

The training steps alone (no start-up, evaluation or reports), the same two ways:

    python -m compare bench experiments/tuning.toml --set 'experiment.fuse="off"' --modes shared,fused --steps 30 --repeats 5

Results on the 2-core CPU: benchmarks/results/cpu-issue25-tuning-{fused.txt,bench.md}.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def run(config: str, fuse: str, out: str, extra: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "compare", "run", config, "--out", out, "--overwrite", "--no-plots", "-q", "--set", f"experiment.fuse={fuse}", *extra],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 3):  # 3: some trials diverged (a high learning rate does that), which is a result
        raise SystemExit(f"fuse={fuse}: exit {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="experiments/tuning.toml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="an override for both modes")
    args = parser.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    ratios, times = [], {"off": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = ("off", "auto") if r % 2 == 0 else ("auto", "off")  # alternate which goes first
            for fuse in order:
                times[fuse].append(run(args.config, fuse, f"{tmp}/{fuse}", extra))
            ratios.append(times["off"][-1] / times["auto"][-1])
    boot = np.median(np.random.default_rng(0).choice(ratios, size=(10_000, len(ratios))), axis=1)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, {args.repeats} interleaved repeats of {args.config}")
    print(f"wall s, fuse=off: median {np.median(times['off']):.1f} ({', '.join(f'{t:.1f}' for t in times['off'])})")
    print(f"wall s, fuse=auto: median {np.median(times['auto']):.1f} ({', '.join(f'{t:.1f}' for t in times['auto'])})")
    print(f"speed-up off/auto: median {np.median(ratios):.2f} (95% bootstrap interval {np.quantile(boot, 0.025):.2f}-{np.quantile(boot, 0.975):.2f})")


if __name__ == "__main__":
    main()

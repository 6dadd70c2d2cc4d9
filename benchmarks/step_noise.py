"""How noisy is this machine? The hand-written loop's step over the config's models, on one fixed
batch, timed step by step: the spread of one step and of blocks of steps (the coefficient of
variation, std / mean) and how far the noise is correlated from one step to the next. It says
how many repeats `compare bench` needs before a ratio of a few percent means something, and
whether interleaving the modes finely helps (correlated noise) or only more steps do (not).

    PYTHONPATH=. python benchmarks/step_noise.py benchmarks/configs/mlp16_digits.toml --steps 1500
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/step_noise.py benchmarks/configs/mlp16_digits.toml
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from compare.resolve import components
from compare.assemble.slots import build_slots, resolve_device
from compare.assemble.validate import load_config
from compare.data.loaders import first_batches, load_data
from compare.engine.timing import synchronize

WARMUP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.experiment.device)
    data = load_data(cfg, device)
    loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    (x, y), = first_batches(cfg, cfg.seeds[0], data, device)
    slots = build_slots(cfg, cfg.seeds[0], data, device)
    models, optimizers = [s.model.train() for s in slots], [s.optimizer for s in slots]
    seconds = []
    for _ in range(WARMUP + args.steps):
        synchronize(device)
        tick = time.perf_counter()
        for model, optimizer in zip(models, optimizers):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        seconds.append(time.perf_counter() - tick)
    ms = np.array(seconds[WARMUP:]) * 1000
    print(f"{len(models)} models, batch {len(y)}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; {len(ms)} steps")
    print(f"step: median {np.median(ms):.2f} ms, 10th-90th percentile {np.percentile(ms, 10):.2f}-{np.percentile(ms, 90):.2f} ms")
    for width in (1, 5, 20, 80):
        blocks = ms[: len(ms) // width * width].reshape(-1, width).mean(axis=1)
        print(f"blocks of {width:3d} steps: cv {blocks.std() / blocks.mean():.3f} (independent noise would give {ms.std() / ms.mean() / np.sqrt(width):.3f})")
    centred = ms - ms.mean()
    print("autocorrelation at lag " + ", ".join(f"{lag}: {np.corrcoef(centred[:-lag], centred[lag:])[0, 1]:.2f}" for lag in (1, 5, 20, 80)))


if __name__ == "__main__":
    main()

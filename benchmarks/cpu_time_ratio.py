"""The runner's shared pass against the hand-written loop in CPU time (`time.process_time`),
interleaved in rounds of CHUNK steps: what this process itself spent, which other processes on
busy cores hardly change (wall time, what `compare bench` reports, they do).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/cpu_time_ratio.py benchmarks/configs/mlp16_digits.toml 5 15
"""
from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch

from compare.bench.measure import Steps
from compare.resolve import components
from compare.assemble.slots import build_slots
from compare.assemble.validate import load_config
from compare.data.loaders import config_streams, load_data
from compare.engine.loop import train_one_epoch
from compare.run.shared_pass import SharedPass


def main() -> None:
    config, chunk, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = load_config(config, sys.argv[4:])
    device = torch.device("cpu")
    data = load_data(cfg, device)
    loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = SharedPass(cfg, 0, build_slots(cfg, 0, data, device, loss_fn=loss_fn), data, loss_fn, device)
        slots = build_slots(cfg, 0, data, device)  # the same models again, for the hand loop
    runner_batches, loop_batches = Steps(shared.train_loader), Steps(config_streams(cfg, 0, data, device).train)
    models, optimizers = [s.model.train() for s in slots], [s.optimizer for s in slots]

    def loop(steps: int) -> None:
        for x, y in loop_batches.take(steps):
            for model, optimizer in zip(models, optimizers):
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    def runner(steps: int) -> None:
        train_one_epoch(shared.slots, runner_batches.take(steps), loss_fn, shared.data_rng, 1, streams=shared.streams)

    loop(2)
    runner(2)
    ratios = []
    for _ in range(rounds):
        tick = time.process_time()
        runner(chunk)
        ours = time.process_time() - tick
        tick = time.process_time()
        loop(chunk)
        ratios.append(ours / (time.process_time() - tick))
    low, _, high = statistics.quantiles(ratios, n=4)
    print(f"{config}: runner/loop CPU time per step, median of {rounds} rounds of {chunk} steps: {statistics.median(ratios):.3f} (quartiles {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()

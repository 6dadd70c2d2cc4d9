"""Torch ops per training step, the runner's shared pass against the hand-written loop, counted
with torch.profiler over the same models and batches (what `compare bench` times as `shared`
and `loop`). Every `aten::` event counts, nested ones included, forward and backward.

    PYTHONPATH=. python benchmarks/op_count.py benchmarks/configs/mlp16_digits.toml --steps 20

Prints ops per step (and per model-step) for both, the difference, and the ops that make it.
"""
from __future__ import annotations

import argparse
import collections
import warnings

from torch.profiler import ProfilerActivity, profile

from compare.bench.measure import Steps
from compare.resolve import components
from compare.assemble.slots import build_slots, resolve_device
from compare.assemble.validate import load_config
from compare.data.loaders import config_streams, load_data
from compare.engine.loop import train_one_epoch
from compare.engine.rng import preserved_rng
from compare.run.shared_pass import SharedPass


def count(work) -> collections.Counter:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.experiment.device)
    data = load_data(cfg, device)
    loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    seed, n = cfg.seeds[0], len(cfg.models)
    with preserved_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = SharedPass(cfg, seed, build_slots(cfg, seed, data, device, fail_fast=True, loss_fn=loss_fn), data, loss_fn, device)
        batches = Steps(shared.train_loader)
        train_one_epoch(shared.slots, batches.take(2), loss_fn, shared.data_rng, epoch=1)  # warm up
        runner = count(lambda: train_one_epoch(shared.slots, batches.take(args.steps), loss_fn, shared.data_rng, epoch=1))

        slots = build_slots(cfg, seed, data, device)
        models, optimizers = [s.model.train() for s in slots], [s.optimizer for s in slots]
        loop_batches = Steps(config_streams(cfg, seed, data, device).train)

        def hand_loop(steps: int) -> None:
            for x, y in loop_batches.take(steps):
                x, y = x.to(device), y.to(device)
                for model, optimizer in zip(models, optimizers):
                    loss = loss_fn(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

        hand_loop(2)
        loop = count(lambda: hand_loop(args.steps))
    per_step = lambda c: sum(c.values()) / args.steps  # noqa: E731
    print(f"{n} models, {args.steps} steps, batch {cfg.data.batch_size}, device {device}")
    print(f"aten ops per step: runner {per_step(runner):.0f}, hand loop {per_step(loop):.0f}; "
          f"per model-step: runner {per_step(runner) / n:.1f}, hand loop {per_step(loop) / n:.1f}, extra {(per_step(runner) - per_step(loop)) / n:.1f}")
    extra = collections.Counter({k: v for k, v in (runner - loop).items()})
    print("ops the runner adds, per model-step:")
    for name, c in extra.most_common(15):
        print(f"  {c / args.steps / n:6.2f}  {name}")


if __name__ == "__main__":
    main()

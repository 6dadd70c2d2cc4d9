"""Instructions per model-step, the runner's step against the hand-written loop's, counted under
valgrind's callgrind: deterministic, so differences of a few percent that wall time (±10% per
repeat on a shared machine) cannot show are measured exactly. One thread, one fixed batch (the
first train batch, so an epoch's short last batch cannot land in one side's count), the same
models; the read point after `--steps` steps is counted on its own.

    PYTHONPATH=. python benchmarks/instruction_count.py benchmarks/configs/mlp16_digits.toml --steps 20

Needs `valgrind` on PATH; takes several minutes (torch's import alone is slow under it).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPEATS = 3  # steps of every model per counted variant


def child(args: argparse.Namespace) -> None:
    """Runs under callgrind: each variant's instructions are one dump (`callgrind_control -d`)."""
    import torch

    from runner.build import components
    from runner.build.slots import build_slots, resolve_device
    from runner.config.validate import load_config
    from runner.data.loaders import first_batches, load_data
    from runner.engine.loop import read_health
    from runner.engine.rng import handover
    from runner.engine.step_log import StepLog

    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.experiment.device)
    data = load_data(cfg, device)
    loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slots = build_slots(cfg, cfg.seeds[0], data, device, fail_fast=True, loss_fn=loss_fn)
    (x, y), = first_batches(cfg, cfg.seeds[0], data, device)

    def hand(step: int) -> None:
        for s in slots:
            loss = loss_fn(s.model(x), y)
            s.optimizer.zero_grad()
            loss.backward()
            s.optimizer.step()

    def runner(step: int) -> None:
        with handover([device]):
            for s in slots:
                s.train_step(x, y, loss_fn, 1, step)

    def dump(name: str) -> None:
        subprocess.run(["callgrind_control", "-d", name, str(os.getpid())], check=True, capture_output=True)

    for work in (hand, runner):  # warm up: first-call costs stay out of the counts
        for step in range(REPEATS):
            work(step)
    for s in slots:
        s.train_meter = StepLog(1)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    for name, work in (("hand", hand), ("runner", runner)):
        for step in range(REPEATS):
            work(step)
        dump(name)
    for s in slots:
        s.train_meter = StepLog(1)
    for step in range(args.steps):
        runner(step)
    dump("steps")
    read_health(slots)
    dump("read")
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
    Path(args.out, "models").write_text(str(len(slots)))


def totals(out: Path) -> dict[str, int]:
    """Each dump's name and instruction count, from its header."""
    counts = {}
    for path in out.glob("cg.*"):
        text = path.read_text(errors="replace")[:20000]
        name = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if name and total:
            counts[name.group(1)] = int(total.group(1))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=20, help="steps before the counted read point")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg", sys.executable, __file__,
                   args.config, "--steps", str(args.steps), "--child", "--out", tmp, *[f"--set={o}" for o in args.overrides]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
        counts, n = totals(Path(tmp)), int(Path(tmp, "models").read_text())
    hand, runner = counts["hand"] / (REPEATS * n), counts["runner"] / (REPEATS * n)
    read = counts["read"] / (args.steps * n)
    print(f"{n} models, one fixed batch, 1 thread; instructions per model-step:")
    print(f"  hand loop {hand / 1e6:.3f} M, runner {runner / 1e6:.3f} M: +{(runner - hand) / 1e3:.0f} k ({runner / hand - 1:+.1%})")
    print(f"  read point after {args.steps} steps: {read / 1e3:.0f} k per model-step ({read / hand:+.1%} of the hand step)")


if __name__ == "__main__":
    main()

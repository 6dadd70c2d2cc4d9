"""Instructions per model-step, the runner's step against the hand-written loop's, counted under
valgrind's callgrind: deterministic, so differences of a few percent that wall time (±10% per
repeat on a shared machine) cannot show are measured exactly. One thread, one fixed batch (the
first train batch, so an epoch's short last batch cannot land in one side's count), the same
models; the read point after `--steps` steps is counted on its own.

    PYTHONPATH=. python benchmarks/instruction_count.py benchmarks/configs/mlp16_digits.toml --steps 20 --functions 12

`--functions N` also says where the runner's extra instructions go: by kind (the gradient norms,
the argmax, malloc/free, the Python interpreter, the random generator) and the N functions
whose own instructions per model-step grew most, from `callgrind_annotate`.

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

    from compare.resolve import components
    from compare.assemble.slots import build_slots, resolve_device
    from compare.assemble.validate import load_config
    from compare.data.loaders import first_batches, load_data
    from compare.engine.loop import read_health
    from compare.engine.rng import handover
    from compare.engine.step_log import StepLog

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


# What a function is part of, by its name, its source path (CPython's tree) or its object file.
KINDS = {"gradient norms": ("norm",), "argmax": ("argmax",), "malloc/free": ("malloc.c",), "Python": ("libpython", "/Python/", "/Objects/", "/Include/", "/Modules/"), "random generator": ("GeneratorImpl",)}


def dumps(out: Path) -> dict[str, Path]:
    """Each dump's name and file."""
    named = {}
    for path in out.glob("cg.*"):
        name = re.search(r"^desc: Trigger: dump (\S+)", path.read_text(errors="replace")[:20000], re.M)
        if name:
            named[name.group(1)] = path
    return named


def by_function(path: Path) -> dict[str, int]:
    """Each function's own (exclusive) instructions in one dump, by its name and object file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if match and "PROGRAM TOTALS" not in match.group(2):
            counts[match.group(2)] = counts.get(match.group(2), 0) + int(match.group(1).replace(",", ""))
    return counts


def where_it_goes(hand: Path, runner: Path, model_steps: int, top: int) -> None:
    """The runner's extra instructions per model-step, by kind and by function."""
    before, after = by_function(hand), by_function(runner)
    extra = {f: (after.get(f, 0) - before.get(f, 0)) / model_steps for f in before.keys() | after.keys()}
    kinds = {kind: sum(v for f, v in extra.items() if any(key in f for key in keys)) for kind, keys in KINDS.items()}
    print("  by kind: " + ", ".join(f"{kind} {v / 1e3:+.0f} k" for kind, v in kinds.items()) + f", the rest {(sum(extra.values()) - sum(kinds.values())) / 1e3:+.0f} k")
    for name, v in sorted(extra.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {v / 1e3:+7.1f} k  {short_name(name)}")


GENERIC_LOOPS = {"binary_kernel_reduce_lastdim", "cpu_serial_kernel", "cpu_kernel_vec", "binary_kernel_reduce_vec"}


def short_name(name: str) -> str:
    """A kernel by its op (callgrind names a TensorIterator loop by its whole template), a C
    function by its file's name."""
    kernels = [k for k in re.findall(r"::(\w+_kernel\w*)", name) if k not in GENERIC_LOOPS]
    if kernels:
        return f"kernel {kernels[0]}"
    name = re.sub(r" \[/.*\]$", "", name)  # the object file
    name = re.sub(r"^\S*/", "", name)  # a source path: its file only
    return name if len(name) <= 100 else name[:99] + "…"


def totals(named: dict[str, Path]) -> dict[str, int]:
    """Each dump's name and instruction count, from its header."""
    counts = {}
    for name, path in named.items():
        total = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace")[:20000], re.M)
        if total:
            counts[name] = int(total.group(1))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=20, help="steps before the counted read point")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--functions", type=int, default=0, help="also list the N functions whose instructions grew most")
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
        named, n = dumps(Path(tmp)), int(Path(tmp, "models").read_text())
        counts = totals(named)
        if args.functions:
            print(f"{n} models; where the runner's extra instructions per model-step go:")
            where_it_goes(named["hand"], named["runner"], REPEATS * n, args.functions)
    hand, runner = counts["hand"] / (REPEATS * n), counts["runner"] / (REPEATS * n)
    read = counts["read"] / (args.steps * n)
    print(f"{n} models, one fixed batch, 1 thread; instructions per model-step:")
    print(f"  hand loop {hand / 1e6:.3f} M, runner {runner / 1e6:.3f} M: +{(runner - hand) / 1e3:.0f} k ({runner / hand - 1:+.1%})")
    print(f"  read point after {args.steps} steps: {read / 1e3:.0f} k per model-step ({read / hand:+.1%} of the hand step)")


if __name__ == "__main__":
    main()

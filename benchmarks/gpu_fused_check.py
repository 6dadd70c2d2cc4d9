"""The check behind benchmarks/gpu_fused_check.sh: a fused group of N same-architecture tutorial
CNNs (`tudui`) against the same N trained in a plain loop and by the runner one by one.

    python3 benchmarks/gpu_fused_check.py [--device cuda] [--models 8] [--batch 128] [--steps 40]
                                          [--repeats 5] [--target 2.0] [--out result.json]
    python3 benchmarks/gpu_fused_check.py --device cpu --steps 5      # runs anywhere (no speed target)

Data: random CIFAR-shaped batches made on the device (no download, no data loading in the
timings). Each contender gets copies of the same initial models (SGD with momentum, a different
lr per model) and trains `steps` steps per repeat on the same batches:

    loop     the hand-written loop: for model, opt: loss = loss_fn(model(x), y); zero_grad; backward; step
    unfused  the runner's engine over plain slots (metrics, grad norms, one health sync per step)
    fused    the runner's engine over one fused group (runner/engine/fused.py)

Times are medians of `repeats` interleaved repeats after one warm-up repeat each. The
equivalence check trains fresh copies 5 steps fused and in the loop (fp32, TF32 off) and
reports max |param difference|. PASS: fused is at least `target` times faster than the loop and
the difference is within 1e-4.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compare.engine import loop as engine  # noqa: E402
from compare.assemble.validate import config_from_dict  # noqa: E402
from compare.assemble.slots import build_slot  # noqa: E402
from compare.engine.fused import FusedGroup  # noqa: E402
from compare.engine.rng import RngStream  # noqa: E402
from compare.engine.slot import Slot, SlotParts  # noqa: E402
from compare.engine.timing import wall_seconds  # noqa: E402

SHAPE, CLASSES = (3, 32, 32), 10


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--batch", type=int, default=None, help="samples per step (default 128 on CUDA, 32 on the CPU)")
    p.add_argument("--steps", type=int, default=40, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5 on CUDA, 3 on the CPU)")
    p.add_argument("--target", type=float, default=None, help="fused/loop speed-up to pass (default 2 on CUDA, none on CPU)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args()


def initial_slots(n: int, device: torch.device) -> list[Slot]:
    """N tudui models built as the runner builds them (each from its own seeded stream)."""
    models = [{"name": f"tudui{i}", "arch": "tudui", "optimizer": {"name": "SGD", "lr": 0.01 * (1 + i % 4), "momentum": 0.9}} for i in range(n)]
    cfg = config_from_dict({"experiment": {"device": str(device)}, "data": {"dataset": "digits"}, "model": models})
    return [build_slot(cfg, m, 0, SHAPE, CLASSES, device) for m in cfg.models]


def clone(slots: list[Slot]) -> list[Slot]:
    """Plain slots over copies of the models, fresh optimizers with the same hyperparameters."""
    out = []
    for s in slots:
        model = copy.deepcopy(s.model)
        optimizer = type(s.optimizer)(model.parameters(), **s.optimizer.defaults)
        out.append(Slot(SlotParts(s.name, model, optimizer, RngStream(0, s.device), s.device)))
    return out


def hand_loop(slots: list[Slot], batches, loss_fn) -> None:
    for x, y in batches:
        for s in slots:
            loss = loss_fn(s.model(x), y)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            s.optimizer.step()


def runner_pass(slots: list[Slot], batches, loss_fn) -> None:
    engine.train_one_epoch(slots, batches, loss_fn, RngStream(0, torch.device("cpu")), 1)


def max_param_difference(a: list[Slot], b: list[Slot]) -> float:
    return max((p - q).abs().max().item() for sa, sb in zip(a, b) for p, q in zip(sa.model.parameters(), sb.model.parameters()))


def main() -> int:
    args = arguments()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    target = args.target if args.target is not None else (2.0 if cuda else 0.0)
    args.batch = args.batch or (128 if cuda else 32)
    args.repeats = args.repeats or (5 if cuda else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}: {args.models} x tudui, batch {args.batch}, {args.steps} steps x {args.repeats} repeats", flush=True)
    torch.manual_seed(0)
    batches = [(torch.randn(args.batch, *SHAPE, device=device), torch.randint(0, CLASSES, (args.batch,), device=device)) for _ in range(args.steps)]
    loss_fn = torch.nn.CrossEntropyLoss()
    base = initial_slots(args.models, device)

    # Equivalence first, in strict fp32 (TF32 would round the grouped and the plain convolutions differently).
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    loop, fused = clone(base), FusedGroup("check", clone(base), RngStream(0, device)).members
    hand_loop(loop, batches[:5], loss_fn)
    runner_pass(fused, batches[:5], loss_fn)
    difference = max_param_difference(loop, fused)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    tolerance = 1e-4
    scale = max(p.abs().max().item() for s in loop for p in s.model.parameters())
    print(f"max |param difference| fused vs loop after 5 steps (fp32): {difference:.3g} (tolerance {tolerance:g}; max |param| {scale:.3g})", flush=True)

    contenders = {
        "loop": (clone(base), hand_loop),
        "unfused": (clone(base), runner_pass),
        "fused": (FusedGroup("bench", clone(base), RngStream(0, device)).members, runner_pass),
    }
    for slots, work in contenders.values():  # warm-up: kernels chosen, allocator filled
        wall_seconds(lambda: work(slots, batches[:3], loss_fn), device)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeats):  # interleaved, so drift hits every contender alike
        for key, (slots, work) in contenders.items():
            times[key].append(wall_seconds(lambda: work(slots, batches, loss_fn), device))
    median = {k: statistics.median(v) for k, v in times.items()}
    samples = args.steps * args.batch * args.models
    for key, seconds in median.items():
        print(f"{key:8s} {seconds * 1e3 / args.steps:8.2f} ms/step  {samples / seconds:12,.0f} model-samples/s  (repeats: {', '.join(f'{t:.3f}' for t in times[key])} s)")
    speedup_loop = median["loop"] / median["fused"]
    speedup_unfused = median["unfused"] / median["fused"]
    print(f"fused speed-up: {speedup_loop:.2f}x vs the loop, {speedup_unfused:.2f}x vs the runner unfused (target {target:g}x vs the loop)")
    ok = difference <= tolerance and speedup_loop >= target
    result = {
        "device": name, "torch": torch.__version__, "models": args.models, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "seconds": times, "median_s": median, "speedup_vs_loop": speedup_loop, "speedup_vs_unfused": speedup_unfused,
        "max_param_difference": difference, "max_param": scale, "tolerance": tolerance, "target": target, "pass": ok,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'PASS' if ok else 'FAIL'}: fused {speedup_loop:.2f}x the loop (target {target:g}x), max |param difference| {difference:.3g} (<= {tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

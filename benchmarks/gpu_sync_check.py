"""The no-host-sync contract on a CUDA device: `torch.cuda.set_sync_debug_mode("error")` over
the steady-state steps of a shared pass (8 lenet, and mixed sets, on the digits: no files
needed; plain and fused, streams on, off and auto); any synchronising call between read points raises.

    PYTHONPATH=. python benchmarks/gpu_sync_check.py     # prints PASS/FAIL per case, exit 1 on a FAIL
"""
from __future__ import annotations

import itertools
import sys
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader

from compare.resolve import components
from compare.assemble.slots import build_slots
from compare.assemble.validate import config_from_dict
from compare.engine.loop import train_one_epoch
from compare.engine.rng import RngStream
from compare.engine.streams import Streams

STEPS = 12


def case(archs: list[str], fuse: str, streams: str) -> str:
    raw = {
        "experiment": {"name": "sync", "device": "cuda", "fuse": fuse, "streams": streams, "grad_histograms": False},
        "data": {"dataset": "digits", "batch_size": 64},
        "loss": {"name": "CrossEntropyLoss"},
        "model": [{"name": f"{a}{i}", "arch": a, "args": {"width": 8} if a == "resnet18" else {}, "optimizer": {"name": "SGD", "lr": 0.01, "momentum": 0.9}} for i, a in enumerate(archs)],
    }
    cfg = config_from_dict(raw)
    device = torch.device("cuda")
    loss_fn = nn.CrossEntropyLoss()
    data = components.load_dataset(cfg.data, cfg.base_dir, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slots = build_slots(cfg, 0, data, device, fail_fast=True, loss_fn=loss_fn)  # a sync error ends the case
    loader = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [(x.to(device), y.to(device)) for x, y in itertools.islice(loader, STEPS)]
    streams = Streams(streams, [s.device for s in slots])

    def on_step(step, _):
        if step == 2 * 3 + 1:  # past `auto`'s trial steps (3 each way)
            torch.cuda.set_sync_debug_mode("error")
        if step == STEPS - 1:
            torch.cuda.set_sync_debug_mode("default")

    try:
        train_one_epoch(slots, batches, loss_fn, RngStream(1, device), 1, on_step=on_step, streams=streams)
    except Exception as err:  # noqa: BLE001 - the sync error, or a model that raised because of it
        torch.cuda.set_sync_debug_mode("default")
        return f"FAIL ({str(err).splitlines()[0]})"
    return "PASS" if all(s.live for s in slots) else "FAIL (a model left the pass)"


def main() -> int:
    failed = 0
    for archs, fuse, streams in ((["lenet"] * 8, "off", "off"), (["lenet"] * 8, "on", "off"), (["lenet", "resnet18", "mlp", "lenet"], "off", "on"), (["lenet", "resnet18", "mlp"], "off", "auto")):
        verdict = case(archs, fuse, streams)
        failed += verdict != "PASS"
        print(f"{len(archs)} models ({', '.join(sorted(set(archs)))}), fuse={fuse}, streams={streams}: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""No host sync in the steady-state step (docs/performance.md): between read points the engine
calls nothing that makes the host wait for the device (`.item()`, `.tolist()`, `float(t)`,
`bool(t)`, `int(t)`, `.numpy()`, and no op that syncs inside torch, such as `nonzero`). A model
that goes non-finite is noticed at the next read point, stopped at the step where it did."""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from compare.resolve import components
from compare.assemble.slots import build_slots
from compare.assemble.validate import config_from_dict
from compare.engine import loop
from compare.engine.rng import RngStream
from compare.engine.slot import DIVERGED
from tests.helpers import digits_config, mlp

CPU = torch.device("cpu")
PY_SYNCS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
OP_SYNCS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique_dim", "aten::_unique2"}
NAN_FROM_STEP = 3


class NanAfter(nn.Module):
    """An MLP whose outputs are NaN from its NAN_FROM_STEP-th training forward on."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        out = self.net(x)
        return out * float("nan") if self.training and self.calls > NAN_FROM_STEP else out


class SyncCounter:
    """Counts the tensor methods that read a value on the host (patched on torch.Tensor)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in PY_SYNCS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                self.calls.append(_name)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("fuse", ["off", "on"])
def test_no_host_sync_between_read_points(monkeypatch, fuse):
    sgd = {"name": "SGD", "lr": 0.1, "momentum": 0.9}  # Adam reads its step count with .item() (a CPU tensor: no device sync)
    models = [mlp("a", optimizer=sgd), mlp("b", optimizer=sgd), {"name": "nan", "arch": NanAfter, "optimizer": sgd}]
    raw = digits_config(models)
    raw["experiment"] |= {"fuse": fuse, "grad_histograms": False}
    cfg = config_from_dict(raw)
    data = components.load_dataset(cfg.data, cfg.base_dir, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slots = build_slots(cfg, 0, data, CPU, loss_fn=loss_fn)
    assert (fuse == "on") == any(s.unit is not s for s in slots)
    steps = 8
    batches = list(itertools.islice(DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)), steps))
    counter = SyncCounter(monkeypatch)
    prof = profile(activities=[ProfilerActivity.CPU])
    between: dict[str, int] = {}

    def on_step(step, _slots):
        # Steps 1 .. steps-1 run between these two callbacks: the steady state.
        if step == 0:
            counter.calls.clear()
            prof.start()
        elif step == steps - 1:
            prof.stop()
            between["python"] = len(counter.calls)
            between["ops"] = sum(e.name in OP_SYNCS for e in prof.events())
            assert all(s.live for s in slots), "a non-finite model is noticed at the read point, not before"

    loop.train_one_epoch(slots, batches, loss_fn, RngStream(1, CPU), 1, on_step=on_step)
    assert between == {"python": 0, "ops": 0}, counter.calls
    assert counter.calls, "the read point at the end of the epoch reads the device (the counter counts)"
    a, b, nan = slots
    assert a.live and b.live
    assert (nan.status, nan.where) == (DIVERGED, f"epoch 1 step {NAN_FROM_STEP}"), "stopped at its first non-finite step"
    record = nan.end_epoch(1)
    assert record["train_samples"] == 64 * (NAN_FROM_STEP + 1), "its row stops at that step"

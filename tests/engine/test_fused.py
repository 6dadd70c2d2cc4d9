"""experiment.fuse: same-architecture models trained as one vmapped group (runner/engine/fused.py,
runner/assemble/fusing.py) train as they would one by one (fp32 tolerance), keep their own optimizers,
statuses, outputs and checkpoints, and fall back with a reason where they cannot fuse."""
from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from compare.resolve import components

from compare.engine import loop as engine
from compare.assemble.validate import config_from_dict
from compare.assemble.slots import build_slots
from compare.run.experiment import Experiment
from compare.engine.fused import FusedMember
from compare.run.interrupts import Interrupted, StopFlag
from compare.run.progress import Progress
from compare.engine.rng import RngStream
from compare.engine.slot import DIVERGED, Slot
from tests.helpers import ROOT, digits_config

CPU = torch.device("cpu")
TOLERANCE = 1e-5  # max |param difference| fused vs unfused, fp32


def member(name: str, arch="mlp", args=None, optimizer=None, **extra) -> dict:
    return {"name": name, "arch": arch, "args": {"hidden": [32]} if args is None else args, "optimizer": optimizer or {"name": "SGD", "lr": 0.1}} | extra


MIXED_OPTIMIZERS = [
    {"name": "SGD", "lr": 0.1, "momentum": 0.9},
    {"name": "Adam", "lr": 1e-3},
    {"name": "SGD", "lr": 0.03, "weight_decay": 1e-3},
    {"name": "AdamW", "lr": 3e-3, "weight_decay": 0.05},
]


class BatchNormNet(nn.Module):
    """A small CNN with BatchNorm: running statistics are per-member buffers. (No bias before
    BatchNorm: its true gradient is zero, and Adam would turn the rounding noise in it, which
    differs fused and unfused, into lr-sized steps.)"""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes))

    def forward(self, x):
        return self.net(x)


class ItemNet(nn.Module):
    """Data-dependent Python control flow (`.item()`): runs alone, cannot be vmapped."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if out.sum().item() > -1e9 else -out


def config(models: list[dict], fuse: str, **experiment):
    raw = digits_config(models)
    raw["experiment"] |= {"fuse": fuse, "grad_histograms": False} | experiment
    return config_from_dict(raw)


def train(models: list[dict], fuse: str, steps: int = 6, epochs: int = 1):
    """Build one seed's slots and run `steps` training steps per epoch plus an evaluation, as
    the shared pass does; returns the slots."""
    cfg = config(models, fuse)
    data = components.load_dataset(cfg.data, cfg.base_dir, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slots = build_slots(cfg, 0, data, CPU, loss_fn=loss_fn)
    batches = list(itertools.islice(DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)), steps))
    for epoch in range(1, epochs + 1):
        engine.train_one_epoch(slots, batches, loss_fn, RngStream(1, CPU), epoch)
        engine.evaluate(slots, DataLoader(data.test, batch_size=128), loss_fn, epoch)
    return slots


def max_difference(a: Slot, b: Slot) -> float:
    tensors = lambda s: [*s.model.parameters(), *s.model.buffers()]  # noqa: E731
    return max((p.double() - q.double()).abs().max().item() for p, q in zip(tensors(a), tensors(b)))


def test_fused_training_equals_unfused_with_each_members_own_optimizer():
    models = [member(f"mlp{i}", optimizer=o) for i, o in enumerate(MIXED_OPTIMIZERS)]
    models += [member(f"lenet{i}", arch="lenet", args={}, optimizer=o) for i, o in enumerate(MIXED_OPTIMIZERS[:3])]
    plain, fused = train(models, "off"), train(models, "on")
    assert all(type(s) is Slot for s in plain) and all(isinstance(s, FusedMember) for s in fused)
    assert len({s.group for s in fused}) == 2  # one group per architecture
    for a, b in zip(plain, fused):
        assert a.name == b.name and b.live
        assert max_difference(a, b) <= TOLERANCE, a.name
        assert b.train_meter.summary()["train_loss"] == pytest.approx(a.train_meter.summary()["train_loss"], rel=1e-6)
        assert b.eval_meters["test"].loss() == pytest.approx(a.eval_meters["test"].loss(), rel=1e-5)
        assert b.train_meter.grad_norms().tolist() == pytest.approx(a.train_meter.grad_norms().tolist(), rel=1e-5)
        assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
        ra, rb = a.end_epoch(1), b.end_epoch(1)
        assert rb["test_acc"] == ra["test_acc"] and rb["train_samples"] == ra["train_samples"]
        assert rb["time_s"] > 0


def test_a_members_optimizer_step_draws_from_the_groups_stream(monkeypatch):
    """A member's optimizer.step runs on the group's random stream, as a slot's runs on its own:
    what it draws moves that stream on, instead of the same numbers again every step."""
    draws: dict[int, list[float]] = {}
    plain_step = torch.optim.SGD.step

    def drawing_step(self, closure=None):
        draws.setdefault(id(self), []).append(torch.rand(()).item())
        return plain_step(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", drawing_step)
    fused = train([member("a"), member("b")], "on", steps=4)
    assert all(isinstance(s, FusedMember) for s in fused)
    for slot in fused:
        mine = draws[id(slot.optimizer)]
        assert len(mine) == 4 and len(set(mine)) == 4, (slot.name, mine)


def test_batchnorm_running_statistics_are_updated_per_member():
    models = [member(f"bn{i}", arch=BatchNormNet, args={}, optimizer=o) for i, o in enumerate(MIXED_OPTIMIZERS[:3])]
    plain, fused = train(models, "off", steps=5), train(models, "on", steps=5)
    assert all(isinstance(s, FusedMember) for s in fused)
    for a, b in zip(plain, fused):
        bn_a, bn_b = a.model.net[1], b.model.net[1]
        assert int(bn_b.num_batches_tracked) == int(bn_a.num_batches_tracked) == 5
        assert (bn_b.running_mean - bn_a.running_mean).abs().max() <= TOLERANCE
        assert (bn_b.running_var - bn_a.running_var).abs().max() <= TOLERANCE
        assert max_difference(a, b) <= TOLERANCE
        assert b.eval_meters["test"].loss() == pytest.approx(a.eval_meters["test"].loss(), rel=1e-5)  # evaluation uses the running statistics
    # The members' statistics differ from each other: each member has its own.
    assert (fused[0].model.net[1].running_var - fused[1].model.net[1].running_var).abs().max() > 0


def test_a_diverging_member_is_quarantined_and_the_others_train_as_unfused():
    models = [member("a", optimizer=MIXED_OPTIMIZERS[0]), member("boom", optimizer={"name": "SGD", "lr": 1e20}), member("c", optimizer=MIXED_OPTIMIZERS[1])]
    plain, fused = train(models, "off", steps=8, epochs=2), train(models, "on", steps=8, epochs=2)
    assert plain[1].status == fused[1].status == DIVERGED
    assert fused[1].where == plain[1].where  # same step
    group = fused[0].group
    assert group.stacked == [fused[0], fused[2]] and next(iter(group.params.values())).shape[0] == 2  # dropped from the stack
    for i in (0, 2):
        assert fused[i].live and max_difference(plain[i], fused[i]) <= TOLERANCE
        assert fused[i].train_meter.summary()["train_loss"] == pytest.approx(plain[i].train_meter.summary()["train_loss"], rel=1e-6)
    assert fused[1].optimizer.state == {}  # released, like an unfused quarantined model


def labels(slots) -> list[str]:
    return [s.info.get("fused") for s in slots]


def build(models: list[dict], fuse: str, **experiment):
    cfg = config(models, fuse, **experiment)
    data = components.load_dataset(cfg.data, cfg.base_dir, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slots = build_slots(cfg, 0, data, CPU)
    return slots, [str(w.message) for w in caught]


def test_grouping_by_architecture_args_and_device_with_reasons():
    models = [
        member("wide1", optimizer={"name": "SGD", "lr": 0.1}),
        member("narrow1", args={"hidden": [16]}),
        member("wide2", optimizer={"name": "Adam", "lr": 1e-3}),
        member("narrow2", args={"hidden": [16]}, seed=3),
        member("lenet", arch="lenet", args={}),
        member("pinned", device="cpu"),
        member("item1", arch=ItemNet, args={}),
        member("item2", arch=ItemNet, args={}),
    ]
    slots, messages = build(models, "on")
    wide, narrow, lenet, pinned, item1, item2 = labels(slots)[0], labels(slots)[1], *labels(slots)[4:]
    assert labels(slots)[2] == wide and labels(slots)[3] == narrow and wide and narrow and wide != narrow
    assert lenet == pinned == item1 == item2 == ""
    assert [type(s).__name__ for s in slots] == ["FusedMember"] * 4 + ["Slot"] * 4
    assert any("model pinned: model.pinned.device is set" in m for m in messages)
    assert any("not fused: item1, item2: the vmapped step raised" in m for m in messages)

    off, messages = build(models, "off")
    assert all(type(s) is Slot and "fused" not in s.info for s in off) and messages == []

    half, messages = build(models[:3], "on", precision="16-mixed")
    assert labels(half) == ["", "", ""] and any('"16-mixed" needs a GradScaler per model' in m for m in messages)


def test_fusing_trial_leaves_weights_and_streams_untouched():
    """The trial step runs on copies under a forked random state: the members start exactly as
    the unfused models do, and the global generator has not moved."""
    models = [member(f"m{i}", args={"hidden": [32], "dropout": 0.3}) for i in range(3)]
    before = torch.get_rng_state()
    fused, _ = build(models, "auto")
    assert torch.equal(torch.get_rng_state(), before)
    plain, _ = build(models, "off")
    for a, b in zip(plain, fused):
        assert max_difference(a, b) == 0 and torch.equal(a.rng.cpu_state, b.rng.cpu_state)


SWEEP_TOML = """
[experiment]
name = "fused-cli"
epochs = 2
device = "cpu"
fuse = "on"
grad_histograms = false
[data]
dataset = "digits"
batch_size = 64
eval_batch_size = 150
subset = 320
test_subset = 150
[[model]]
name = "mlp"
arch = "mlp"
args = { hidden = [32], dropout = 0.1 }
optimizer = { name = "SGD", lr = 0.1, momentum = 0.9 }
sweep = { "optimizer.lr" = [0.3, 0.1, 0.03] }
[[model]]
name = "lenet"
arch = "lenet"
"""


def test_compare_run_cli_writes_every_member_and_the_fused_column(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "compare", "run", path, "--out", out, "-q", "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    points = ["mlp[lr=0.3]", "mlp[lr=0.1]", "mlp[lr=0.03]"]
    history, board, models = (pd.read_csv(out / f, keep_default_na=False) for f in ("history.csv", "leaderboard.csv", "models.csv"))
    assert sorted(history["model"].unique()) == sorted(points + ["lenet"]) and len(history) == 8
    assert (history["status"][history["epoch"] == 2] == "done").all()
    for table in (models, board):
        fused = dict(zip(table["model"], table["fused"]))
        assert {fused[p] for p in points} == {"mlp#1"} and fused["lenet"] == ""
    for name in points + ["lenet"]:
        assert (out / "tb" / name).is_dir() and (out / "predictions" / name / "seed_0.npz").exists()
    assert "warning" not in proc.stderr


class StopAt(Progress):
    """Asks the run to stop (as Ctrl-C does) after a given step of the first epoch."""

    def __init__(self, flag: StopFlag, step: int):
        self.flag, self.step = flag, step

    @contextmanager
    def epoch(self, epoch, epochs, batches, seed=None, start=0):
        def on_step(step, slots):
            if epoch == 1 and step + 1 == self.step:
                self.flag.signum = signal.SIGINT

        yield on_step


def test_resume_of_a_fused_run_mid_epoch_continues_like_the_uninterrupted_run(tmp_path):
    models = [member(f"m{i}", args={"hidden": [32], "dropout": 0.2}, optimizer=o) for i, o in enumerate(MIXED_OPTIMIZERS[:3])]
    raw = digits_config(models, epochs=2)
    raw["experiment"] |= {"fuse": "on", "grad_histograms": False}
    whole = Experiment(config_from_dict(raw)).run(tmp_path / "whole", plots=False)
    flag = StopFlag()
    with pytest.raises(Interrupted):
        Experiment(config_from_dict(raw)).run(tmp_path / "cut", plots=False, progress=StopAt(flag, 7), stop=flag)
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert saved["pass"]["step"] == 7 and saved["fused"] == {"m0": "mlp#1", "m1": "mlp#1", "m2": "mlp#1"}
    for state in saved["pass"]["slots"].values():  # a member's slice only, not the whole stack
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in state["model"].values())
    resumed = Experiment(config_from_dict(raw)).run(tmp_path / "cut", resume=True, plots=False)
    cols = ["train_loss", "test_loss", "test_acc", "grad_norm_mean"]
    a, b = whole.history.sort_values(["model", "epoch"]), resumed.history.sort_values(["model", "epoch"])
    assert list(a["model"]) == list(b["model"])
    assert (a[cols].to_numpy() - b[cols].to_numpy()).__abs__().max() <= 1e-6


def test_auto_picks_fused_or_one_by_one_and_records_it(tmp_path):
    models = [member(f"m{i}", optimizer=o) for i, o in enumerate(MIXED_OPTIMIZERS[:3])] + [member("lenet", arch="lenet", args={})]
    raw = digits_config(models, epochs=1, subset=320, test_subset=150)
    raw["experiment"] |= {"fuse": "auto", "grad_histograms": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Experiment(config_from_dict(raw)).run(tmp_path / "auto", plots=False)
    said = [str(w.message) for w in caught if "experiment.fuse = auto" in str(w.message)]
    assert len(said) == 1 and "m0, m1, m2: a step took" in said[0]
    chosen = "fused as mlp#1" in said[0]
    assert chosen or "trained one by one" in said[0]
    models_csv = pd.read_csv(tmp_path / "auto" / "models.csv", keep_default_na=False)
    assert list(models_csv["fused"]) == (["mlp#1"] * 3 if chosen else [""] * 3) + [""]
    assert list(result.leaderboard.set_index("model").loc[["m0", "m1", "m2"], "fused"].fillna("")) == (["mlp#1"] * 3 if chosen else [""] * 3)
    # Whichever it chose, the numbers are those of that choice made outright (the trial changed nothing).
    raw["experiment"]["fuse"] = "on" if chosen else "off"
    outright = Experiment(config_from_dict(raw)).run(tmp_path / "outright", plots=False)
    cols = ["model", "train_loss", "test_loss", "test_acc"]
    assert result.history[cols].equals(outright.history[cols])

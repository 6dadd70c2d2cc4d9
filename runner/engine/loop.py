"""The shared pass: every batch is loaded once and fed to every live model.

Read it as the plain loop with slots in it:

    for x, y in loader:
        for slot in slots:  forward, shared loss, zero_grad, backward, step
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
from torch import nn

from compare import nested
from compare.engine.rng import RngStream, handover
from compare.engine.step_log import StepLog, first_nonfinite
from compare.engine.streams import Streams


class Unit(Protocol):
    """What the loop steps once per batch: a slot, or a fused group once for all its live members."""

    device: torch.device

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, epoch: int, step: int) -> None: ...

    def eval_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, epoch: int, split: str = "test") -> None: ...


class LoopSlot(Protocol):
    """What the loop uses of a slot (runner/engine/slot.py; a fused member, a DDP slot)."""

    device: torch.device
    model: nn.Module
    rng: RngStream

    @property
    def live(self) -> bool: ...

    @property
    def unit(self) -> Unit: ...

    @property
    def health_log(self) -> tuple[StepLog, bool]: ...

    def stop_at(self, bad: int | None) -> None: ...

    def health_code(self) -> torch.Tensor: ...

    def settle(self, code: int, where: str) -> None: ...


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader, or the cached path's loader


def seeded_batches(loader: Batches, data_rng: RngStream) -> Iterator:
    """Iterate `loader` with the data pipeline's own random stream active (augmentations in
    the main process draw from torch's global generator), never a model's stream."""
    with data_rng.active():
        batches = iter(loader)
    while True:
        with data_rng.active():
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


Agree = Callable[[torch.Tensor], torch.Tensor]  # under DDP: the codes reduced over ranks (max)


def read_health(slots: list[LoopSlot]) -> None:
    """A read point: quarantine the models whose loss or gradient norm went non-finite at any
    step since the last read, stopped at that step. The steps themselves never sync the host
    (DESIGN.md: no host sync per step); the pass reads at the end of each epoch's training
    and before every checkpoint, so a checkpoint never holds a diverged model as live."""
    live = [s for s in slots if s.live]
    for slot, bad in zip(live, first_nonfinite([s.health_log for s in live])):
        slot.stop_at(bad)


def check_health(slots: list[LoopSlot], where: str, agree: Agree | None = None) -> None:
    """Under DDP, every step: the ranks agree on each model's health in one all-reduce, so a
    model unhealthy (or failed) on any rank leaves every rank at the same step."""
    if not slots and agree is None:
        return
    home = canonical(slots[0].device) if slots else torch.device("cpu")
    codes = torch.stack([s.health_code().to(home, non_blocking=True) for s in slots]) if slots else torch.zeros(0, dtype=torch.long)
    if agree is not None:
        codes = agree(codes)
    for slot, code in zip(slots, codes.tolist()):
        if code:
            slot.settle(code, where)


def canonical(device: torch.device) -> torch.device:
    """`cuda` and `cuda:<current>` are one device: one copy of the batch, not two."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def to_devices(x: Any, y: Any, slots: list[LoopSlot]) -> dict[torch.device, tuple[Any, Any]]:
    """The batch (inputs and targets: tensors or any nested structure of them, runner/nested.py)
    on every device a live model uses: copied once per device, not once per model."""
    out: dict[torch.device, tuple[Any, Any]] = {}
    for slot in slots:
        device = canonical(slot.device)
        if slot.live and device not in out:
            out[device] = (nested.to(x, device, non_blocking=True), nested.to(y, device, non_blocking=True))
    return out


def step_units(slots: list[LoopSlot]) -> list[Unit]:
    """What the pass steps, in slot order: a plain slot itself, or once for all its live
    members, the fused group a slot belongs to (runner/engine/fused.py)."""
    return list(dict.fromkeys(s.unit for s in slots if s.live))


def train_one_epoch(
    slots: list[LoopSlot],
    loader: Batches,
    loss_fn: nn.Module,
    data_rng: RngStream,
    epoch: int,
    start_step: int = 0,
    on_step: Callable[[int, list[LoopSlot]], None] | None = None,
    agree: Agree | None = None,
    streams: Streams | None = None,
) -> float:
    """One pass over the train split (from `start_step` when resuming); returns the seconds
    spent waiting for data. Under DDP `loader` yields this rank's slice of each batch.
    `streams` (runner/engine/streams.py) runs each unit on its own CUDA stream."""
    streams = streams or Streams("off", ())
    for slot in slots:
        slot.model.train()
    data_seconds = 0.0
    tick = time.perf_counter()
    for step, (x, y) in enumerate(seeded_batches(loader, data_rng), start=start_step):
        batch = to_devices(x, y, slots)  # moved once per device, shared by every model there
        data_seconds += time.perf_counter() - tick
        live = [s for s in slots if s.live]
        units = step_units(live)
        with handover(u.device for u in units):  # one switch per model: from the last model's stream to its own
            streams.step(units, lambda unit: unit.train_step(*batch[canonical(unit.device)], loss_fn, epoch, step))
        if agree is not None:
            check_health(live, f"epoch {epoch} step {step}", agree)
        if on_step is not None:
            on_step(step, slots)
        tick = time.perf_counter()
    if agree is None:  # under DDP the ranks agreed at every step
        read_health(slots)
    return data_seconds


def evaluate(slots: list[LoopSlot], loader: Batches, loss_fn: nn.Module, epoch: int, agree: Agree | None = None, split: str = "test") -> torch.Tensor:
    """Every live model on one evaluation split ("val" or "test"), in order, under eval() and
    no_grad(). Returns its targets in that order (on the CPU; under DDP: this rank's shard)."""
    live = [s for s in slots if s.live]
    for slot in live:
        slot.model.eval()
        with slot.rng.active():
            # A hand-written eval loop's `iter(DataLoader(test))` draws one int64 from the
            # global generator (its worker base seed). Draw it from each model's own stream,
            # so the stream stays in step with the plain loop (DESIGN.md: plain-loop equivalence).
            torch.empty((), dtype=torch.int64).random_()
    targets = []
    with torch.no_grad():
        for x, y in loader:
            targets.append(y)
            batch = to_devices(x, y, live)
            for unit in step_units(live):
                unit.eval_step(*batch[canonical(unit.device)], loss_fn, epoch, split)
    for slot in live:
        slot.model.train()
    if agree is not None:  # a model that raised in evaluation on one rank fails on all
        check_health(live, f"epoch {epoch} {split} evaluation", agree)
    return nested.cat(targets) if targets else torch.zeros(0, dtype=torch.long)

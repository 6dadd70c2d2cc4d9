"""The shared pass: every batch is loaded once and fed to every live model.

Read it as the plain loop with slots in it:

    for x, y in loader:
        for slot in slots:  forward, shared loss, zero_grad, backward, step
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from runner.rng import RngStream
from runner.slot import Slot


def seeded_batches(loader: DataLoader, data_rng: RngStream) -> Iterator:
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


def check_health(slots: list[Slot], epoch: int, step: int) -> None:
    """Quarantine models whose loss or gradient norm went non-finite this step: one host
    sync for all models together, instead of one per model."""
    trained = [s for s in slots if s.live and s.step_ok is not None]
    if not trained:
        return
    for slot, ok in zip(trained, torch.stack([s.step_ok for s in trained]).tolist()):
        if not ok:
            slot.diverge(f"epoch {epoch} step {step}")


def train_one_epoch(
    slots: list[Slot],
    loader: DataLoader,
    loss_fn: nn.Module,
    device: torch.device,
    data_rng: RngStream,
    epoch: int,
    start_step: int = 0,
    on_step: Callable[[int, list[Slot]], None] | None = None,
) -> float:
    """One pass over the train split (from `start_step` when resuming); returns the seconds
    spent waiting for data."""
    for slot in slots:
        slot.model.train()
    data_seconds = 0.0
    tick = time.perf_counter()
    for step, (x, y) in enumerate(seeded_batches(loader, data_rng), start=start_step):
        x = x.to(device, non_blocking=True)  # moved once, shared by every model
        y = y.to(device, non_blocking=True)
        data_seconds += time.perf_counter() - tick
        for slot in slots:
            if slot.live:
                slot.train_step(x, y, loss_fn, epoch, step)
        check_health(slots, epoch, step)
        if on_step is not None:
            on_step(step, slots)
        tick = time.perf_counter()
    return data_seconds


def evaluate(slots: list[Slot], loader: DataLoader, loss_fn: nn.Module, device: torch.device, epoch: int) -> torch.Tensor:
    """Every live model on the test split, in order, under eval() and no_grad().
    Returns the test targets in that order (on the CPU)."""
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
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            for slot in live:
                if slot.live:
                    slot.eval_step(x, y, loss_fn, epoch)
    for slot in live:
        slot.model.train()
    return torch.cat(targets)

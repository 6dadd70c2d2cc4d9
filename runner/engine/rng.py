"""THE one home of random-stream protection.

Dropout, random init and most augmentations draw from torch's *global* generators, so each
model (and the data pipeline) gets its own saved state (`RngStream`), swapped in only while its
own work runs. Another model's draws can then never shift this model's numbers. The loop steps
a batch's models inside `handover`, so each switch goes straight from one model's stream to the
next. Work that must
move no stream at all (user code at load time, probes, the fusing trial, benchmarks) runs under
`preserved_rng`. Seeds per name come from `derive_seed` (runner/config/seeds.py).
"""
from __future__ import annotations

import random
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch



def cuda_indices(devices: Iterable[torch.device]) -> list[int]:
    """The CUDA generators that work on `devices` may draw from."""
    out = []
    for device in devices:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            out.append(index)
    return sorted(set(out))


@contextmanager
def preserved_rng(devices: Iterable[torch.device] = ()) -> Iterator[None]:
    """Run the block without moving any global generator: torch's CPU generator, the CUDA
    generators of `devices`, Python's `random` and numpy's (when numpy is loaded)."""
    state = random.getstate()
    numpy = sys.modules.get("numpy")
    np_state = numpy.random.get_state() if numpy is not None else None
    try:
        with torch.random.fork_rng(devices=cuda_indices(devices)):
            yield
    finally:
        random.setstate(state)
        if np_state is not None:
            numpy.random.set_state(np_state)


CPU_GENERATOR = torch.default_generator  # what torch.get_rng_state/set_rng_state wrap, without their frames


class _Handovers:
    open = 0  # `handover` blocks open
    active = 0  # `RngStream.active` blocks open: a nested one saves and restores as usual


@contextmanager
def handover(devices: Iterable[torch.device] = ()) -> Iterator[None]:
    """Inside it, `active()` blocks that follow one another switch straight from one stream to
    the next: the caller's state (torch's CPU generator, the CUDA generators of `devices`) is
    saved once here and restored at the end, not around each block. Per model per step that
    halves the state copies, which a step of a few hundred microseconds notices. Nothing may
    draw between the blocks: it would draw from the last stream's leftover state."""
    with torch.random.fork_rng(devices=cuda_indices(devices)):
        _Handovers.open += 1
        try:
            yield
        finally:
            _Handovers.open -= 1


class RngStream:
    def __init__(self, seed: int, device: torch.device):
        self.seed = seed
        self.cuda_index = device.index if device.type == "cuda" else None
        if self.cuda_index is None and device.type == "cuda":
            self.cuda_index = torch.cuda.current_device()
        # State after `torch.manual_seed(seed)`, captured without disturbing the caller's state.
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(seed)
            self.cpu_state = torch.get_rng_state()
            self.cuda_state = torch.cuda.get_rng_state(self.cuda_index) if self._devices() else None

    def _devices(self) -> list[int]:
        return [] if self.cuda_index is None else [self.cuda_index]

    def active(self) -> "_Active":
        """Run the block on this stream; the caller's state is restored afterwards (inside a
        `handover`, at its end)."""
        return _Active(self)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "cpu": self.cpu_state.clone(), "cuda": None if self.cuda_state is None else self.cuda_state.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.cpu_state = state["seed"], state["cpu"]
        if self.cuda_state is not None and state["cuda"] is not None:
            self.cuda_state = state["cuda"]


class _Active:
    """`RngStream.active()`: a plain class, not a generator-based context manager, because it
    is entered once per model per step and a step of a small model is a few hundred microseconds."""

    __slots__ = ("stream", "outer")

    def __init__(self, stream: RngStream):
        self.stream = stream
        self.outer = None

    def __enter__(self) -> None:
        stream = self.stream
        cuda = stream.cuda_state is not None
        if not _Handovers.open or _Handovers.active:
            self.outer = CPU_GENERATOR.get_state(), torch.cuda.get_rng_state(stream.cuda_index) if cuda else None
        CPU_GENERATOR.set_state(stream.cpu_state)
        if cuda:
            torch.cuda.set_rng_state(stream.cuda_state, stream.cuda_index)
        _Handovers.active += 1

    def __exit__(self, *exc) -> None:
        stream, outer = self.stream, self.outer
        _Handovers.active -= 1
        stream.cpu_state = CPU_GENERATOR.get_state()
        cuda = stream.cuda_state is not None
        if cuda:
            stream.cuda_state = torch.cuda.get_rng_state(stream.cuda_index)
        if outer is not None:
            CPU_GENERATOR.set_state(outer[0])
            if cuda:
                torch.cuda.set_rng_state(outer[1], stream.cuda_index)

"""THE one home of random-stream protection.

Dropout, random init and most augmentations draw from torch's *global* generators, so each
model (and the data pipeline) gets its own saved state (`RngStream`), swapped in only while its
own work runs. Another model's draws can then never shift this model's numbers. Work that must
move no stream at all (user code at load time, probes, the fusing trial, benchmarks) runs under
`preserved_rng`. Seeds per name come from `derive_seed`.
"""
from __future__ import annotations

import hashlib
import random
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


def derive_seed(experiment_seed: int, name: str) -> int:
    """A stable seed per (experiment seed, name): independent of which other models exist."""
    digest = hashlib.sha256(f"{experiment_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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

    @contextmanager
    def active(self):
        """Run the block on this stream; the caller's state is restored afterwards."""
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state(self.cuda_index) if self.cuda_state is not None else None
        torch.set_rng_state(self.cpu_state)
        if outer_cuda is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.cuda_index)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if outer_cuda is not None:
                self.cuda_state = torch.cuda.get_rng_state(self.cuda_index)
                torch.cuda.set_rng_state(outer_cuda, self.cuda_index)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "cpu": self.cpu_state.clone(), "cuda": None if self.cuda_state is None else self.cuda_state.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.cpu_state = state["seed"], state["cpu"]
        if self.cuda_state is not None and state["cuda"] is not None:
            self.cuda_state = state["cuda"]

"""Separate random streams on top of torch's global generators.

Dropout, random init and most augmentations draw from torch's *global* generators, so each
model (and the data pipeline) gets its own saved state, swapped in only while its own work
runs. Another model's draws can then never shift this model's numbers.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


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

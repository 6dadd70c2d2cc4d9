"""Wall time of one model's own work. On CUDA kernels run asynchronously, so time is taken
with CUDA events and read once per epoch instead of synchronising every step."""
from __future__ import annotations

import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: timings on CUDA and MPS are otherwise of the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def wall_seconds(work: Callable[[], object], device: torch.device) -> float:
    """Seconds `work()` takes, its device work included (benchmarks and fuse = "auto")."""
    synchronize(device)
    tick = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - tick


def clock(device: torch.device):
    """Now, for a WorkTimer: a recorded CUDA event (read later, no sync), else the wall clock."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


class WorkTimer:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event, float]] = []
        self._start = None

    def start(self) -> None:
        self._start = clock(self.device) if self.cuda else time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.add_share(self._start, clock(self.device))
        else:  # the common case inlined: it runs twice per model per step
            self._seconds += time.perf_counter() - self._start

    def add_share(self, start, end, share: float = 1.0) -> None:
        """The work between two `clock()` readings, counted at `share` (a fused group's
        members each count their part of the group's step)."""
        if self.cuda:
            self._events.append((start, end, share))
        else:
            self._seconds += (end - start) * share

    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(s.elapsed_time(e) * share for s, e, share in self._events) / 1000.0
            self._events.clear()
        return self._seconds

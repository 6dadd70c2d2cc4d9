"""`experiment.streams`: on CUDA, each unit the loop steps (a slot, or a fused group for all its
members) runs on its own CUDA stream, so the kernels of small models of different architectures
overlap instead of queueing one model after another (HFTA's "concurrent" baseline).

    off   one after another on the current stream, as the plain loop
    on    every unit on its own stream; on a CPU or MPS device: off, with one `warning:` line
    auto  on CUDA with two or more units: the first steps are timed alternately both ways
          (TRIAL_STEPS each; the only host syncs of the steady state, and only then) and the
          faster way is kept for the rest of the pass; elsewhere off, the reason logged (INFO)

Per step: the batch is copied once on the current stream; an event recorded there is what every
unit's stream waits on; after the units the current stream waits for every unit's stream (the
join: a GPU-side wait, no host sync), so health and metric reads, evaluation and the next
batch's copy see every model's work. A stream changes no number: each model runs the same
kernels in the same order, with the same random streams.
"""
from __future__ import annotations

import logging
import statistics
import time
import warnings
from typing import Callable, Sequence

import torch

from compare.errors import CompareWarning

log = logging.getLogger(__name__)
TRIAL_STEPS = 3  # timed steps each way before `auto` decides


class Streams:
    def __init__(self, setting: str, devices: Sequence[torch.device]):
        self.setting = setting
        cuda = [d for d in devices if d.type == "cuda"]
        self.enabled: bool | None = False  # None: `auto` is still measuring
        self.reason = ""
        if setting == "off":
            self.reason = "experiment.streams = off"
        elif not cuda:
            self.reason = f"CUDA streams need a CUDA device; the models run one after another on {', '.join(sorted({str(d) for d in devices})) or 'no device'}"
            if setting == "on":
                warnings.warn(CompareWarning(f'experiment.streams = "on": {self.reason}'), stacklevel=2)
            else:
                log.info("experiment.streams = auto: %s", self.reason)
        else:
            self.enabled = True if setting == "on" else None
        self._streams: dict[int, torch.cuda.Stream] = {}  # id(unit) -> its stream
        self._trial: dict[bool, list[float]] = {False: [], True: []}

    def step(self, units: Sequence, work: Callable[[object], None]) -> None:
        """`work(unit)` for every unit, on its own stream where streams are on."""
        if self.enabled is False or len(units) < 2 or not any(_on_cuda(u) for u in units):
            for unit in units:
                work(unit)
            return
        if self.enabled is None:
            self._measure(units, work)
            return
        self._concurrent(units, work)

    def _concurrent(self, units: Sequence, work: Callable[[object], None]) -> None:
        ready: dict[torch.device, torch.cuda.Event] = {}
        for unit in units:
            if not _on_cuda(unit):
                work(unit)
                continue
            device = unit.device
            if device not in ready:
                ready[device] = torch.cuda.current_stream(device).record_event()
            stream = self._streams.get(id(unit))
            if stream is None:
                stream = self._streams[id(unit)] = torch.cuda.Stream(device)
            stream.wait_event(ready[device])
            with torch.cuda.stream(stream):
                work(unit)
        for unit in units:
            if id(unit) in self._streams:
                torch.cuda.current_stream(unit.device).wait_stream(self._streams[id(unit)])

    def _measure(self, units: Sequence, work: Callable[[object], None]) -> None:
        """One timed step, alternately with and without streams; decides after TRIAL_STEPS each."""
        concurrent = len(self._trial[True]) < len(self._trial[False])
        devices = sorted({u.device for u in units if _on_cuda(u)}, key=str)
        for device in devices:
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        if concurrent:
            self._concurrent(units, work)
        else:
            for unit in units:
                work(unit)
        for device in devices:
            torch.cuda.synchronize(device)
        self._trial[concurrent].append(time.perf_counter() - tick)
        if len(self._trial[True]) >= TRIAL_STEPS:
            on, off = statistics.median(self._trial[True]), statistics.median(self._trial[False])
            self.enabled = on < off
            self.reason = f"a step took {on * 1e3:.2f} ms with a stream per model, {off * 1e3:.2f} ms one after another"
            verdict = "streams on" if self.enabled else "streams off"
            warnings.warn(CompareWarning(f"experiment.streams = auto: {len(units)} models: {self.reason}: {verdict}"), stacklevel=3)


def _on_cuda(unit) -> bool:
    return unit.device.type == "cuda"

"""Progress display. `Progress` shows nothing (library use, tests); `terminal_progress()` picks
`RichProgress` (a bar over the batches) on a terminal and `PlainProgress` (plain lines, no
escape codes: CI logs, files) elsewhere. Both show the running mean train loss of each model,
`seed i/n`, an overall ETA, and after each epoch one line per model with its metrics."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Column
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar

from compare.metrics.builtin import TEST_HEADLINE, VAL_HEADLINE

# Shown after each epoch when the record holds them (val_* only where the run has a val split).
EPOCH_METRICS = ("train_loss", "val_loss", VAL_HEADLINE, "test_loss", TEST_HEADLINE)


class Progress:
    @contextmanager
    def epoch(self, epoch: int, epochs: int, batches: int, seed: tuple[int, int] | None = None, start: int = 0):
        """Yields the engine's `on_step(step, slots)` callback (None: nothing to show).
        `seed` is (this seed's position from 1, the number of seeds); None with one seed."""
        yield None

    def epoch_done(self, records: list[dict], rank: str | None = None) -> None:
        """The epoch's history records, one per model, once the epoch is evaluated; `rank`:
        the metric the run ranks by ([report] rank_by; None: accuracy, or the task's first)."""


def terminal_progress(console: Console | None = None) -> Progress:
    console = console or Console(stderr=True)
    return RichProgress(console) if console.is_terminal else PlainProgress(console)


def mean_losses(slots) -> str:
    """`mlp 0.412  lenet 0.388`: each live model's mean train loss over the epoch so far
    (reading it syncs the device: callers do it only every so often)."""
    parts = []
    for s in slots:
        if s.live and s.train_meter.seen:
            parts.append(f"{s.name} {s.train_meter.mean_loss():.3f}")
    return "  ".join(parts)


def epoch_line(record: dict, width: int, rank: str | None = None) -> str:
    """`mlp   train_loss 0.412  val_acc 0.9012  test_acc 0.9100`, NaN metrics left out. A run
    ranked by another metric (`rank`: macro_f1, top5_acc) shows it in accuracy's place."""
    cells = [record["model"].ljust(width)]
    keys = list(EPOCH_METRICS)
    rank = (rank or "").removeprefix("test_")
    if rank and f"test_{rank}" in record and f"test_{rank}" != TEST_HEADLINE:
        keys = [k.replace(TEST_HEADLINE, f"test_{rank}").replace(VAL_HEADLINE, f"val_{rank}") for k in keys]
    elif not math.isfinite(record.get(TEST_HEADLINE, math.nan)):  # no classes: the task's first metric instead (rmse, micro_f1, ...)
        first = next((k.removeprefix("test_") for k in record if k.startswith("test_") and k not in EPOCH_METRICS), None)
        keys += [f"val_{first}", f"test_{first}"] if first else []
    for key in keys:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            cells.append(f"{key} {value:.4f}")
    if record.get("status") not in (None, "running", "done"):
        cells.append(str(record["status"]))
    return "  ".join(cells)


def clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class RunClock:
    """Steps done and to do over the whole run (every seed, every epoch): the overall ETA."""

    def __init__(self):
        self.started: float | None = None
        self.done_at_start = 0

    def eta(self, done: int, total: int) -> str:
        now = time.perf_counter()
        if self.started is None:
            self.started, self.done_at_start = now, done
            return "ETA ?"
        rate = (done - self.done_at_start) / max(now - self.started, 1e-9)
        return f"ETA {clock((total - done) / rate)}" if rate > 0 else "ETA ?"


class _Shown(Progress):
    """What both displays share: the labels, the clock, the epoch lines."""

    def __init__(self, console: Console, refresh_s: float):
        self.console = console
        self.refresh_s = refresh_s  # reading losses syncs the device: only this often
        self.clock = RunClock()
        self.label = ""

    def _position(self, epoch: int, epochs: int, batches: int, seed, step: int) -> tuple[int, int]:
        index, count = seed or (1, 1)
        return ((index - 1) * epochs + epoch - 1) * batches + step, count * epochs * batches

    def _label(self, epoch: int, epochs: int, seed) -> str:
        return f"epoch {epoch}/{epochs}" + (f" seed {seed[0]}/{seed[1]}" if seed else "")

    def epoch_done(self, records: list[dict], rank: str | None = None) -> None:
        width = max((len(r["model"]) for r in records), default=0)
        for record in records:
            self.console.print(f"{self.label}  {epoch_line(record, width, rank)}", markup=False, highlight=False, soft_wrap=True)


class RichProgress(_Shown):
    def __init__(self, console: Console | None = None, refresh_s: float = 0.5):
        super().__init__(console or Console(stderr=True), refresh_s)

    @contextmanager
    def epoch(self, epoch: int, epochs: int, batches: int, seed: tuple[int, int] | None = None, start: int = 0):
        self.label = self._label(epoch, epochs, seed)
        # Everything but the losses keeps its width; the losses give way (cut with "...") first.
        whole = lambda: Column(no_wrap=True)  # noqa: E731
        columns = (
            TextColumn(escape(self.label), table_column=whole()), BarColumn(bar_width=12, table_column=whole()), MofNCompleteColumn(table_column=whole()),
            TimeElapsedColumn(table_column=whole()), TextColumn("{task.fields[eta]}", table_column=whole()),
            TextColumn("{task.fields[losses]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        )
        with RichBar(*columns, console=self.console, transient=True, expand=True) as bar:
            task = bar.add_task("train", total=batches, completed=start, losses="", eta="")
            last = 0.0

            def on_step(step, slots):
                nonlocal last
                now = time.perf_counter()
                fields = {}
                if now - last >= self.refresh_s or step + 1 == batches:
                    last = now
                    # escaped: sweep points like mlp[lr=0.1] are not rich markup
                    fields["losses"] = escape("mean train loss: " + mean_losses(slots))
                    fields["eta"] = self.clock.eta(*self._position(epoch, epochs, batches, seed, step + 1))
                bar.update(task, completed=step + 1, **fields)

            yield on_step


class PlainProgress(_Shown):
    """One line every `every_s` seconds during an epoch, one line per model after it."""

    def __init__(self, console: Console | None = None, every_s: float = 30.0):
        super().__init__(console or Console(stderr=True), every_s)

    @contextmanager
    def epoch(self, epoch: int, epochs: int, batches: int, seed: tuple[int, int] | None = None, start: int = 0):
        self.label = self._label(epoch, epochs, seed)
        last = time.perf_counter()
        self.clock.eta(*self._position(epoch, epochs, batches, seed, start))  # starts the clock

        def on_step(step, slots):
            nonlocal last
            now = time.perf_counter()
            if now - last >= self.refresh_s and step + 1 < batches:
                last = now
                eta = self.clock.eta(*self._position(epoch, epochs, batches, seed, step + 1))
                self.console.print(f"{self.label}  step {step + 1}/{batches}  {eta}  mean train loss: {mean_losses(slots)}", markup=False, highlight=False, soft_wrap=True)

        yield on_step

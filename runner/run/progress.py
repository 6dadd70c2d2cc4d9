"""Progress display. `Progress` shows nothing (library use, tests); `RichProgress` draws a
bar over the batches with each model's latest loss."""
from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar


class Progress:
    @contextmanager
    def epoch(self, epoch: int, epochs: int, batches: int, seed: int | None = None, start: int = 0):
        """Yields the engine's `on_step(step, slots)` callback (None: nothing to show)."""
        yield None


class RichProgress(Progress):
    def __init__(self, console: Console | None = None, refresh_s: float = 0.5):
        self.console = console or Console(stderr=True)
        self.refresh_s = refresh_s  # reading losses syncs the device: only this often

    @contextmanager
    def epoch(self, epoch: int, epochs: int, batches: int, seed: int | None = None, start: int = 0):
        label = f"epoch {epoch}/{epochs}" + (f" seed {seed}" if seed is not None else "")
        columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
        with RichBar(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task("train", total=batches, completed=start, losses="")
            last = 0.0

            def on_step(step, slots):
                nonlocal last
                now = time.perf_counter()
                fields = {}
                if now - last >= self.refresh_s or step + 1 == batches:
                    last = now
                    fields["losses"] = "  ".join(f"{s.name} {s.last_loss.item():.3f}" for s in slots if s.live and s.last_loss is not None)
                bar.update(task, completed=step + 1, **fields)

            yield on_step

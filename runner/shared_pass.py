"""One seed's shared pass: the loaders, the data stream, the slots, and where training stands
(epoch, step), which is everything a checkpoint must hold to continue bitwise-exactly."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from runner.config import Config, derive_seed
from runner.engine import evaluate, train_one_epoch
from runner.interrupts import Interrupted, StopFlag
from runner.progress import Progress
from runner.rng import RngStream
from runner.sampler import ResumableRandomSampler
from runner.sinks import HistorySink, TensorBoardSink, write_predictions
from runner.slot import DONE, RUNNING, Slot

DATA_STREAM = "<data>"  # name the data pipeline's random stream is derived from


@dataclass
class Outputs:
    """Where a pass reports to; `checkpoint()` is called with the pass whenever state is safe to save."""

    run_dir: Path
    history: HistorySink
    checkpoint: Callable[["SharedPass"], None]
    progress: Progress
    stop: StopFlag
    checkpoint_every_steps: int | None = None
    grad_histograms: bool = True


class SharedPass:
    def __init__(self, cfg: Config, seed: int, slots: list[Slot], data, loss_fn, device: torch.device):
        self.cfg, self.seed, self.slots, self.loss_fn, self.device = cfg, seed, slots, loss_fn, device
        d = cfg.data
        workers = {"num_workers": d.num_workers, "pin_memory": device.type == "cuda", "persistent_workers": d.num_workers > 0}
        self.train_gen = torch.Generator().manual_seed(seed)
        self.sampler = ResumableRandomSampler(data.train, generator=self.train_gen)
        self.train_loader = DataLoader(data.train, batch_size=d.batch_size, sampler=self.sampler, generator=self.train_gen, **workers)
        # Own generator: iterating the shared test loader must not draw from any model's stream.
        self.test_gen = torch.Generator().manual_seed(seed)
        self.test_loader = DataLoader(data.test, batch_size=d.eval_batch_size, shuffle=False, generator=self.test_gen, **workers)
        self.data_rng = RngStream(derive_seed(seed, DATA_STREAM), torch.device("cpu"))
        self.epoch, self.step = 1, 0  # the epoch in progress (or next) and its steps already done
        self.epoch_start_gen = self.train_gen.get_state()  # replayed to resume mid-epoch
        self.error_files: set[str] = set()
        self.resumed = False

    @property
    def finished(self) -> bool:
        return self.epoch > self.cfg.experiment.epochs

    def run(self, out: Outputs) -> None:
        cfg = self.cfg
        multi = len(cfg.seeds) > 1
        tb = TensorBoardSink(out.run_dir / "tb", {s.name: s.name + (f"/seed_{self.seed}" if multi else "") for s in self.slots}, purge_step=self.epoch if self.resumed else None)
        try:
            while not self.finished and any(s.live for s in self.slots):
                self._epoch(out, tb, seed_label=self.seed if multi else None)
            self._finish(out, tb)
        finally:
            tb.close()

    def _epoch(self, out: Outputs, tb: TensorBoardSink, seed_label) -> None:
        epoch, epochs = self.epoch, self.cfg.experiment.epochs
        self.train_gen.set_state(self.epoch_start_gen)
        self.sampler.skip = self.step * self.cfg.data.batch_size

        with out.progress.epoch(epoch, epochs, len(self.train_loader), seed_label, start=self.step) as show:

            def on_step(step: int, slots: list[Slot]) -> None:
                self.step = step + 1
                if show is not None:
                    show(step, slots)
                self._write_errors(out.run_dir)
                every = out.checkpoint_every_steps
                if out.stop or (every and self.step % every == 0):
                    out.checkpoint(self)
                if out.stop:
                    raise Interrupted(out.stop.signum, f"checkpoint written at epoch {epoch} step {self.step}")

            data_seconds = train_one_epoch(self.slots, self.train_loader, self.loss_fn, self.device, self.data_rng, epoch, self.step, on_step)
        targets = evaluate(self.slots, self.test_loader, self.loss_fn, self.device, epoch)
        self._write_errors(out.run_dir)

        records = []
        for slot in (s for s in self.slots if not s.reported):
            record = slot.end_epoch(epoch) | {"seed": self.seed, "model_seed": slot.rng.seed, "data_time_s": data_seconds}
            if epoch == epochs and slot.live:
                slot.status = record["status"] = DONE
            slot.reported = slot.status != RUNNING
            records.append(record)
            if out.grad_histograms:
                tb.write_gradients(slot.name, epoch, slot.model)
        out.history.write(records)
        tb.write(records)
        self.targets = targets
        self.epoch, self.step = epoch + 1, 0
        self.epoch_start_gen = self.train_gen.get_state()
        if not self.finished and any(s.live for s in self.slots):
            out.checkpoint(self)
            if out.stop:
                raise Interrupted(out.stop.signum, f"checkpoint written after epoch {epoch}")

    def _finish(self, out: Outputs, tb: TensorBoardSink) -> None:
        """Predictions of every model that was evaluated, at its last and its best epoch."""
        for slot in self.slots:
            if slot.best is not None:
                last = slot.predictions if slot.predictions is not None else slot.best[2]
                last_epoch = self.epoch - 1 if slot.predictions is not None else slot.best[1]
                write_predictions(out.run_dir, slot.name, self.seed, self.targets, final=(last_epoch, last), best=slot.best[1:])

    def _write_errors(self, run_dir: Path) -> None:
        for slot in self.slots:
            if slot.error and slot.name not in self.error_files:
                folder = run_dir / "errors"
                folder.mkdir(exist_ok=True)
                (folder / f"{slot.name}.txt").write_text(f"{slot.status} at {slot.where}\n\n{slot.error}")
                self.error_files.add(slot.name)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "epoch_start_gen": self.epoch_start_gen,
            "test_gen": self.test_gen.get_state(),
            "data_rng": self.data_rng.state_dict(),
            "targets": getattr(self, "targets", None),
            "slots": {s.name: s.state_dict() for s in self.slots},
            "error_files": sorted(self.error_files),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.epoch_start_gen = state["epoch_start_gen"]
        self.test_gen.set_state(state["test_gen"])
        self.data_rng.load_state_dict(state["data_rng"])
        if state["targets"] is not None:
            self.targets = state["targets"]
        for slot in self.slots:
            slot.load_state_dict(state["slots"][slot.name])
        self.error_files = set(state["error_files"])
        self.resumed = True

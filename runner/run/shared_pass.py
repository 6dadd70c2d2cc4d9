"""One seed's shared pass: the loaders, the data stream, the slots, and where training stands
(epoch, step), which is everything a checkpoint must hold to continue bitwise-exactly.

Under torchrun (`dist.enabled`) each rank loads its slice of every global batch and its
contiguous shard of the test set; only rank 0 writes (TensorBoard, predictions, errors)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from compare import atomic
from compare.config.schema import Config
from compare.data.loaders import config_streams
from compare.run.checkpoint import Checkpointer
from compare.engine.dist import Dist
from compare.engine.loop import evaluate, read_health, train_one_epoch
from compare.engine.race import Race, describe
from compare.metrics import heads
from compare.metrics.builtin import Kept, lookup
from compare.run.interrupts import Interrupted, StopFlag, resume_command
from compare.run.progress import Progress
from compare.rundir import layout
from compare.run.sinks import HistorySink, NullTensorBoardSink, TensorBoardSink, write_predictions, weights_state, write_weights
from compare.engine.slot import Slot
from compare.engine.streams import Streams


@dataclass
class Outputs:
    """Where a pass reports to; `checkpointer.save(pass)` whenever its state is safe to save."""

    run_dir: Path
    history: HistorySink
    checkpointer: Checkpointer
    progress: Progress
    stop: StopFlag
    checkpoint_every_steps: int | None = None
    grad_histograms: bool = True
    weights: bool = True  # models/<model>/final.pt and best_val.pt


class SharedPass:
    def __init__(self, cfg: Config, seed: int, slots: list[Slot], data, loss_fn, device: torch.device, dist: Dist | None = None, looks=None):
        """`looks`: under --place models, where the race meets the other ranks' models."""
        self.cfg, self.seed, self.slots, self.loss_fn, self.device, self.looks = cfg, seed, slots, loss_fn, device, looks
        self.dist = dist = dist or Dist()
        # The train and test streams (runner/data/loaders.py: DataLoader or cache, sharded
        # under torchrun) and the generators a checkpoint saves.
        streams = config_streams(cfg, seed, data, device, dist.rank, dist.world if dist.enabled else 1)
        self.train_loader, self.test_loader, self.sampler = streams.train, streams.test, streams.sampler
        self.train_gen, self.test_gen, self.data_rng = streams.train_gen, streams.test_gen, streams.data_rng
        self.val_loader, self.val_gen = streams.val, streams.val_gen  # None: no val split
        self.epoch, self.step = 1, 0  # the epoch in progress (or next) and its steps already done
        self.epoch_start_gen = self.train_gen.get_state()  # replayed to resume mid-epoch
        self.error_files: set[str] = set()
        self.weights: dict[str, dict[str, dict]] = {}  # model -> "final"/"best_val" -> the state written: a checkpoint keeps it (runner/run/weights.py)
        race = cfg.experiment.race
        self.race = Race(race.alpha, race.min_epochs, race.every, cfg.experiment.epochs) if race is not None else None
        self.resumed = False
        self.stop_agreed = 0  # under DDP: the signal any rank got (the ranks stop at the same step); 0 = none
        self.streams = Streams(cfg.experiment.streams, [s.device for s in slots])  # a CUDA stream per model, or not

    @property
    def finished(self) -> bool:
        return self.epoch > self.cfg.experiment.epochs

    def run(self, out: Outputs) -> None:
        cfg = self.cfg
        multi = len(cfg.seeds) > 1
        runs = {s.name: layout.tb_run(s.name, self._seed_folder()) for s in self.slots}
        tb = TensorBoardSink(out.run_dir / layout.TB, runs, purge_step=self.epoch if self.resumed else None) if self.dist.main else NullTensorBoardSink()
        try:
            while not self.finished and any(s.live for s in self.slots):
                self._epoch(out, tb, seed_label=(cfg.seeds.index(self.seed) + 1, len(cfg.seeds)) if multi else None)
            if self.looks is not None and self.race is not None:  # the other ranks still look
                self.looks.pass_ended(self.seed, [e for e in self.race.planned if e >= self.epoch])
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
                stop = self.stop_agreed if self.dist.enabled else out.stop.signum
                every = out.checkpoint_every_steps
                if stop or (every and self.step % every == 0):
                    if not self.dist.enabled:  # under DDP the ranks agreed on health at this step
                        read_health(self.slots)  # a read point: no checkpoint holds a diverged model as live
                        self._write_errors(out.run_dir)
                    out.checkpointer.save(self)
                if stop:
                    raise Interrupted(stop, f"checkpoint written at epoch {epoch} step {self.step}; {resume_command(out.run_dir)} goes on from there")

            def agree(codes: torch.Tensor) -> torch.Tensor:
                """One all-reduce per batch for every model's health and the stop request: a
                signal reaches the ranks at different steps, yet they must stop at the same one."""
                flags = self.dist.all_max(torch.cat([codes, torch.tensor([out.stop.signum or 0], device=codes.device)]))
                self.stop_agreed = int(flags[-1])
                return flags[:-1]

            agreement = agree if self.dist.enabled else None
            data_seconds = train_one_epoch(self.slots, self.train_loader, self.loss_fn, self.data_rng, epoch, self.step, on_step, agreement, self.streams)
        val_targets = None
        if self.val_loader is not None:  # what this epoch's decisions read (Slot.end_epoch, the race)
            val_targets = evaluate(self.slots, self.val_loader, self.loss_fn, epoch, agreement, split="val")
            if self.race is not None:  # only the race needs every rank's val targets
                val_targets = self.dist.gather_cat(val_targets)
        targets = self.dist.gather_cat(evaluate(self.slots, self.test_loader, self.loss_fn, epoch, agreement))

        records = []
        for slot in (s for s in self.slots if not s.reported):
            record = slot.end_epoch(epoch, last=epoch == epochs) | {"seed": self.seed, "model_seed": slot.rng.seed, "data_time_s": data_seconds}
            records.append(record)
            if self.dist.main and out.weights and slot.best is not None and slot.best[0] == epoch:  # the best epoch on val so far
                self._write_weights(out.run_dir, slot, "best_val")
            if out.grad_histograms:
                tb.write_gradients(slot.name, epoch, slot.model)
        if self.race is not None and val_targets is not None:
            self._race(epoch, records, val_targets)
        self._write_errors(out.run_dir)  # failed in evaluation, or diverged there (end_epoch)
        out.history.write(records)
        out.progress.epoch_done(records, self.cfg.report.rank_by)  # the line shows the metric the run ranks by
        tb.write(records)
        self.targets = targets
        self.epoch, self.step = epoch + 1, 0
        self.epoch_start_gen = self.train_gen.get_state()
        if not self.finished and any(s.live for s in self.slots):
            out.checkpointer.save(self)
            stop = self.stop_agreed if self.dist.enabled else out.stop.signum
            if stop:
                raise Interrupted(stop, f"checkpoint written after epoch {epoch}; {resume_command(out.run_dir)} goes on from there")

    def _finish(self, out: Outputs, tb: TensorBoardSink) -> None:
        """Test predictions of every model that was evaluated: at its last epoch, and at its
        best epoch on val (the paired tests of `report.select = "best_val"` read those)."""
        for slot in self.slots if self.dist.main else ():
            if slot.final is not None:
                write_predictions(out.run_dir, slot.name, self.seed, self.targets, final=slot.final, best=slot.best, reported=self.cfg.report.select)
                if out.weights:
                    self._write_weights(out.run_dir, slot, "final")

    def _write_weights(self, run_dir: Path, slot: Slot, which: str) -> None:
        """models/<model>/<which>.pt, and a copy for the checkpoint (a resume rebuilds a damaged file from it)."""
        state = weights_state(slot.model)
        write_weights(run_dir, slot.name, self._seed_folder(), which, state)
        self.weights.setdefault(slot.name, {})[which] = copy.deepcopy(state)  # on the CPU the state shares the live parameters

    def _seed_folder(self) -> int | None:
        """Model files go under seed_<s>/ with several seeds, as TensorBoard runs do."""
        return self.seed if len(self.cfg.seeds) > 1 else None

    def _race(self, epoch: int, records: list[dict], val_targets: torch.Tensor) -> None:
        """Eliminate the live models val shows to be worse (runner/engine/race.py); their row of
        this epoch is their last. Every rank decides alike: under DDP the predictions are
        gathered; under --place models every rank's live models meet at the look (`looks`)."""
        live = {s.name: s for s in self.slots if s.live and s.val_predictions is not None and s.task is not None}
        stats = {n: s.val_predictions for n, s in live.items()}
        if self.looks is not None and epoch in self.race.planned:
            stats = self.looks.exchange(self.seed, epoch, stats)
        task = next(iter(live.values())).task if live else None  # none live here: nothing to eliminate here
        metric = lookup(self.cfg.experiment.race.metric.removeprefix("val_"), task.kind, task.width) if task else None
        kept = {n: Kept.of(v, task.width, heads.kept_target(val_targets)) for n, v in stats.items()} if task else {}  # heads: each keeps its targets
        found = self.race.look_on(epoch, kept, metric) if metric is not None else []
        rows = {r["model"]: r for r in records}
        for record in records:
            record.setdefault("eliminated_by", "")
        for e in (e for e in found if e.model in live):  # another rank eliminates its own
            slot = live[e.model]
            slot.eliminate(epoch, describe(e))
            slot.reported = True
            rows[e.model] |= {"status": slot.status, "stopped_at": slot.where, "eliminated_by": slot.eliminated_by}

    def _write_errors(self, run_dir: Path) -> None:
        for slot in self.slots if self.dist.main else ():
            if slot.error and slot.name not in self.error_files:
                path = layout.error_file(run_dir, slot.name)
                path.parent.mkdir(exist_ok=True)
                atomic.write_text(path, f"{slot.status} at {slot.where}\n\n{slot.error}")
                self.error_files.add(slot.name)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "epoch_start_gen": self.epoch_start_gen,
            "test_gen": self.test_gen.get_state(),
            "val_gen": self.val_gen.get_state() if self.val_gen is not None else None,
            "data_rng": self.data_rng.state_dict(),
            "targets": getattr(self, "targets", None),
            "slots": {s.name: s.state_dict() for s in self.slots},
            "error_files": sorted(self.error_files),
            "weights": self.weights,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.epoch_start_gen = state["epoch_start_gen"]
        self.test_gen.set_state(state["test_gen"])
        if self.val_gen is not None:
            self.val_gen.set_state(state["val_gen"])
        self.data_rng.load_state_dict(state["data_rng"])
        if state["targets"] is not None:
            self.targets = state["targets"]
        for slot in self.slots:
            slot.load_state_dict(state["slots"][slot.name])
        self.error_files = set(state["error_files"])
        self.weights = dict(state.get("weights") or {})  # absent from checkpoints written before it
        self.resumed = True

    def rank_state(self) -> dict:
        """Under DDP, what differs between ranks (rank 0 saves every rank's copy)."""
        return {
            "data_rng": self.data_rng.state_dict(),
            "global_rng": torch.get_rng_state(),
            "slots": {s.name: s.rank_state() for s in self.slots},
        }

    def load_rank_state(self, state: dict) -> None:
        self.data_rng.load_state_dict(state["data_rng"])
        torch.set_rng_state(state["global_rng"])
        for slot in self.slots:
            slot.load_rank_state(state["slots"][slot.name])

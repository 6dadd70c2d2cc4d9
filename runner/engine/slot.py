"""A slot: everything that belongs to one model and nothing else (DESIGN.md).

The loop uses what `compare.engine.loop.LoopSlot` lists (`train_step`, `eval_step`,
`health_code`/`settle`, `unit`, ...), and the pass calls `end_epoch`, so other kinds of slot (a
fused member, a DDP-wrapped model) stand behind the same interface. Each is built from the same
`SlotParts` (runner/assemble/slots.py). A slot that fails or diverges leaves the pass; the others
never notice.
"""
from __future__ import annotations

import gc
import math
import signal
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from compare import nested
from compare.engine import calling
from compare.engine.early_stopping import BestEpoch, EarlyStopping
from compare.metrics.selection import selection_metric
from compare.errors import ModelFailedError, StopNow
from compare.metrics import own as own_metric
from compare.metrics.builtin import Kept, defaults, lookup
from compare.metrics.outputs import prediction
from compare.metrics import heads
from compare.metrics.tasks import Task, infer_task, sample_stats, shown
from compare.engine.numerics import Numerics
from compare.engine.recipe import StepRecipe
from compare.engine.rng import RngStream
from compare.engine.step_log import StepLog, first_nonfinite
from compare.engine.meters import Meter, batch_loss_sum, concat, top1_classes
from compare.engine.timing import WorkTimer

if TYPE_CHECKING:
    from compare.config.schema import ModelConfig

RUNNING, DONE, EARLY_STOPPED, DIVERGED, FAILED, ELIMINATED = "running", "done", "early_stopped", "diverged", "failed", "eliminated"
HEALTHY, NONFINITE, RAISED = 0, 1, 2  # a step's health code; the worst wins when ranks agree (max)


def is_signal(err: BaseException) -> bool:
    """A real signal, not the model's doing: the second Ctrl-C under compare's handler
    (StopNow), or Ctrl-C where Python's default handler turns SIGINT into KeyboardInterrupt.
    Under compare's handler a bare KeyboardInterrupt, like SystemExit, comes from the model's code."""
    if isinstance(err, StopNow):
        return True
    return type(err) is KeyboardInterrupt and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@dataclass
class SlotParts:
    """What a slot is built from; a plain slot, a fused member and a DDP slot take the same parts."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    rng: RngStream  # the model's own stream, already past the model's construction
    device: torch.device
    config: "ModelConfig | None" = None  # the model's own config (None for throwaway copies)
    scheduler: Any = None
    scheduler_interval: str = "epoch"  # when the scheduler steps: "epoch" or "step"
    info: dict = field(default_factory=dict)  # arch, params, optimizer, ...: static facts for the leaderboard
    early_stopping: EarlyStopping | None = None
    fail_fast: bool = False  # re-raise a model's exception instead of quarantining it
    numerics: Numerics = Numerics()
    forward: Callable | None = None  # the model's torch.compile'd forward, or None: the model
    output_key: str | None = None  # [report] output: where metrics find the prediction in the model's output
    metrics: tuple[str, ...] | None = None  # [report] metrics (None: the task's defaults), as val_<m> / test_<m> columns
    rank_by: str | None = None  # [report] rank_by: the metric a best epoch on val is chosen on (without early stopping)
    recipe: StepRecipe = field(default_factory=StepRecipe)  # gradient accumulation and clipping (runner/engine/recipe.py)
    spread: bool = False  # a dict input goes in as model(**x) (runner/engine/calling.py), else model(x)


class Slot:
    def __init__(self, parts: SlotParts):
        self.parts = parts
        self.name, self.config, self.info = parts.name, parts.config, parts.info
        self.model = parts.model
        self.params = list(parts.model.parameters())  # taken once: load_state_dict and .to() copy into these objects
        self.forward = parts.forward or parts.model
        self.numerics = parts.numerics
        self.scaler = parts.numerics.grad_scaler(parts.device)  # fp16 only
        self.optimizer, self.scheduler, self.scheduler_interval = parts.optimizer, parts.scheduler, parts.scheduler_interval
        self.rng, self.device = parts.rng, parts.device
        self.early_stopping, self.fail_fast = parts.early_stopping, parts.fail_fast
        self.status, self.where, self.error = RUNNING, "", ""
        self.reported = False  # its last history row (with the final status) is written
        self.timer, self.eval_timer = WorkTimer(self.device), WorkTimer(self.device)
        self.train_meter = StepLog()
        self.eval_meters = {"val": Meter(), "test": Meter()}  # evaluation sums, per split
        self.last_loss: torch.Tensor | None = None  # for the progress display (reading it syncs)
        self.task: Task | None = None  # set by the slot factory; else inferred from the first evaluation batch
        self.eval_preds: dict[str, list[dict[str, torch.Tensor]]] = {"val": [], "test": []}  # per-sample statistics per batch
        self.predictions: dict[str, torch.Tensor] | None = None  # last evaluation's test statistics (runner/metrics/tasks.py), on the CPU
        self.val_predictions: dict[str, torch.Tensor] | None = None  # the same on val (what racing compares)
        self.eliminated_by = ""  # racing: the model that beat it, and the p-value
        self.selection: BestEpoch | None = None  # the best epoch on val so far (set at the first val epoch)
        self.best: tuple[int, dict] | None = None  # (that epoch, its test statistics)
        self.final: tuple[int, dict] | None = None  # (the last epoch with test statistics, those)

    @property
    def live(self) -> bool:
        return self.status == RUNNING

    @property
    def unit(self) -> "Slot":
        """What the loop steps for this slot: itself (a fused member: its group)."""
        return self

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, epoch: int, step: int) -> None:
        """One step, with no host sync: its health is read at the engine's next read point."""
        self.timer.start()
        try:
            with self.rng.active():
                output, loss = self.forward_loss(self.forward, x, y, loss_fn)
                if self.parts.recipe.starts(step):  # accumulation (runner/engine/recipe.py): zeroed at a group's first batch
                    self.optimizer.zero_grad(set_to_none=True)
                share = self.parts.recipe.share(loss, nested.batch_size(y), loss_fn, step)  # the loss itself without accumulation
                (self.scaler.scale(share) if self.scaler else share).backward()
                norms = self._optimizer_step(loss_fn) if self.parts.recipe.due(step) else None
            self._record_step(loss, prediction(output, self.parts.output_key), y, loss_fn, norms, epoch, step)
        except BaseException as err:  # noqa: BLE001 - one model's failure (even sys.exit) must not end the pass
            self._fail(err, f"epoch {epoch} step {step}")
        finally:
            self.timer.stop()

    def forward_loss(self, forward, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module):
        """The model's output (a tensor, tuple, dict, ...) under its precision and layout, and
        the shared loss on that output exactly as returned (a low-precision tensor in fp32)."""
        if self.numerics.plain:  # fp32 in the model's own layout: no wrapper to enter
            output = calling.call(forward, x, self.parts.spread)
            return output, loss_fn(output, y)
        with self.numerics.autocast(self.device):
            output = calling.call(forward, nested.map_tensors(self.numerics.layout, x), self.parts.spread)
        if isinstance(output, torch.Tensor) and output.is_floating_point() and output.dtype != torch.float32 and self.numerics.precision != "32":
            output = output.float()
        return output, loss_fn(output, y)

    def _optimizer_step(self, loss_fn=None) -> list[torch.Tensor]:
        """After backward: each gradient's norm (one fused `_foreach_norm`; the total norm is
        taken from them at the read point), clipping, then the optimizer and a per-step scheduler.
        Under fp16 the scaler unscales first and skips the step when a gradient overflowed."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = self.parts.recipe.norms(grads, self.params, loss_fn)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        return norms

    def _record_step(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, norms: list[torch.Tensor], epoch: int, step: int) -> None:
        """The step's row in the train log, on the device (read at the engine's read points)."""
        self.last_loss = heads.detached(loss)  # a loss per head: each head's value rides along (train_<head>/loss)
        self.train_meter.epoch = epoch
        summed = getattr(loss_fn, "reduction", "mean") == "sum"
        self.train_meter.record(self.last_loss, top1_classes(logits, y), y, norms, nested.batch_size(y), step, summed)

    def eval_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, epoch: int, split: str = "test") -> None:
        """One val or test batch; the caller holds `torch.no_grad()` and has called `model.eval()`."""
        self.eval_timer.start()
        try:
            with self.rng.active():
                output, loss = self.forward_loss(self.forward, x, y, loss_fn)
            pred = output if (several := self.task is not None and self.task.kind == "heads") else prediction(output, self.parts.output_key)  # heads: each reads its own
            self.keep(split, pred, y, batch_loss_sum(loss, nested.batch_size(y), loss_fn), x)
            if several:  # a loss per head: each head's loss per sample too (`<head>/loss`)
                self.eval_preds[split][-1] |= heads.loss_stats(loss_fn, output, y)
        except BaseException as err:  # noqa: BLE001
            self._fail(err, f"epoch {epoch} {split} evaluation")
        finally:
            self.eval_timer.stop()

    def keep(self, split: str, pred: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor, x=None) -> None:
        """One evaluation batch's sums and per-sample statistics, on the device (no host sync)."""
        if self.task is None:
            self.task = infer_task(y[0].cpu() if y.ndim else y.cpu(), tuple(pred.shape[1:]), None)
        top1 = top1_classes(pred, y)
        self.eval_meters[split].add(loss_sum, None if top1 is None else (top1 == y).sum(), nested.batch_size(y))
        first = {} if self.eval_preds[split] else shown(self.task, pred, x)  # a dense task's first masks, for the report's picture
        self.eval_preds[split].append({"target": heads.kept_target(y)} | sample_stats(self.task, pred, y) | first)

    def metric_names(self) -> list[str]:
        """The metrics history.csv gets val_/test_ columns for (acc comes from the meters)."""
        task = self.task or Task("other")
        names = list(self.parts.metrics) if self.parts.metrics is not None else defaults(task.kind, task.width)
        return [m for m in names if m != "acc"]

    def epoch_metrics(self, split: str, kept: dict[str, torch.Tensor] | None, epoch: int | None = None) -> dict[str, float]:
        """val_<m> / test_<m> for every metric of the run, from this epoch's kept statistics."""
        names = self.metric_names()
        if kept is None or self.task is None:
            return {f"{split}_{m}": math.nan for m in names}
        data, own = Kept.of(kept, self.task.width), self.user_metrics or {}
        # a metric of the user's own is checked as it is called: what goes wrong is exit 2 naming it
        return {f"{split}_{m}": own_metric.value(own[m], data, f"model {self.name}'s {split} evaluation at epoch {epoch}") if m in own
                else lookup(m, self.task.kind, self.task.width).value(data) for m in names}

    user_metrics: dict | None = None  # [report] metrics given by reference (name -> Metric), set by the slot factory

    @property
    def health_log(self) -> tuple[StepLog, bool]:
        """What the health check reads: the train log, and whether only its loss counts. Under
        fp16 an overflowed gradient is the scaler's business (step skipped, scale lowered), not
        divergence; a non-finite loss is."""
        return self.train_meter, self.scaler is not None

    def read_health(self) -> None:
        """A read point for this model alone (one host sync); the engine reads every model at
        once (`compare.engine.loop.read_health`)."""
        if self.live:
            self.stop_at(first_nonfinite([self.health_log])[0])

    def stop_at(self, bad: int | None) -> None:
        """The health check found row `bad` of this epoch's train log non-finite (None: all
        finite): the model leaves the pass, stopped at that step."""
        if bad is not None and self.live:
            log = self.train_meter
            where = f"epoch {log.epoch} step {log.steps[bad]}"
            log.truncate(bad + 1)
            self.diverge(where)

    def health_code(self) -> torch.Tensor:
        """Under DDP, read every step: the last step's health, on the host, for the ranks to agree on."""
        if self.status == FAILED:
            return torch.tensor(RAISED)
        return torch.tensor(NONFINITE if self.live and first_nonfinite([self.health_log])[0] is not None else HEALTHY)

    def settle(self, code: int, where: str) -> None:
        """Act on the step's (agreed) health code: a non-finite step quarantines the model. A
        failure was already handled where it was raised."""
        if code == NONFINITE and self.live:
            self.train_meter.truncate(len(self.train_meter))
            self.diverge(where)

    def diverge(self, where: str, what: str = "loss or gradient norm") -> None:
        self.status, self.where = DIVERGED, where
        self.error = f"non-finite {what} at {where}"
        self._release()

    def eliminate(self, epoch: int, by: str) -> None:
        """Racing found it worse on val (runner/engine/race.py): it trains no further."""
        self.status, self.where, self.eliminated_by = ELIMINATED, f"epoch {epoch}", by
        self._release()

    def _fail(self, err: BaseException, where: str) -> None:
        if is_signal(err) or isinstance(err, ModelFailedError):
            raise err
        self.read_health()  # went non-finite steps before (not yet read): that is where it stopped
        if not self.live:
            return
        if self.fail_fast:
            raise ModelFailedError(f"model {self.name} failed at {where}: {type(err).__name__}: {err} (--fail-fast)") from err
        self.status, self.where = FAILED, where
        self.error = "".join(traceback.format_exception(err))
        self._release()

    def _release(self) -> None:
        """Free what a stopped model holds on the device (gradients, optimizer state)."""
        self.optimizer.state.clear()
        self.model.zero_grad(set_to_none=True)
        self.last_loss = None
        if self.device.type == "cuda":
            self.model.to("cpu")
            gc.collect()
            torch.cuda.empty_cache()

    def end_epoch(self, epoch: int, last: bool = False) -> dict:
        """This epoch's record (one history row); keeps the test predictions of the best epoch
        on val, applies early stopping, steps an epoch scheduler, resets the meters. Every
        decision reads val (or train), never test. After the `last` epoch a live model is DONE;
        a model whose val loss (test loss, without a val split) went non-finite has diverged."""
        train, val, test = self.train_meter.summary(), self.eval_meters["val"], self.eval_meters["test"]
        seconds = self.timer.seconds()
        record = {
            "model": self.name,
            "epoch": epoch,
            "train_loss": train["train_loss"],
            "train_acc": train["train_acc"],
            "val_loss": val.loss(),
            "val_acc": val.accuracy(),
            "test_loss": test.loss(),
            "test_acc": test.accuracy(),
            "grad_norm_mean": train["grad_norm_mean"],
            "grad_norm_max": train["grad_norm_max"],
            "grad_norm_last": train["grad_norm_last"],
            "grad_nonfinite": train["grad_nonfinite"],
            **learning_rates(self.optimizer),
            "time_s": seconds,
            "eval_time_s": self.eval_timer.seconds(),
            "samples_per_s": train["train_samples"] / seconds if seconds > 0 else math.nan,
            "train_samples": train["train_samples"], **{k: v for k, v in train.items() if "/" in k},  # train_<head>/loss
        }
        health = "val" if val.seen else "test"
        if self.live and (val.seen or test.seen) and not math.isfinite(record[f"{health}_loss"]):
            self.diverge(f"epoch {epoch} evaluation", f"{health} loss")
        preds = {split: concat(p) if p and self.live else None for split, p in self.eval_preds.items()}
        self.predictions, self.val_predictions = preds["test"], preds["val"]
        for split in ("val", "test"):
            record |= self.epoch_metrics(split, preds[split], epoch)
        if self.predictions is not None:
            self.final = (epoch, self.predictions)
        if self.predictions is not None and val.seen:
            if self.selection is None:
                stop = self.early_stopping
                on = selection_metric(stop.metric if stop else None, record["val_acc"], self.select_on())
                own = (self.user_metrics or {}).get(on.removeprefix("val_"))
                self.selection = BestEpoch(on, higher=own.higher if own is not None else None)
            if self.selection.improved(record):
                self.best = (epoch, self.predictions)
        if self.live and self.early_stopping is not None and self.early_stopping.update(record):
            self.status, self.where = EARLY_STOPPED, f"epoch {epoch} (best epoch {self.early_stopping.best_epoch})"
        if self.live and self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record[self.plateau_metric()])  # config validation: a val split exists
            else:
                self.scheduler.step()
        if last and self.live:
            self.status = DONE
        self.reported = self.status != RUNNING  # its final row is this one
        record |= {"status": self.status, "stopped_at": self.where}
        self.eval_preds = {"val": [], "test": []}
        self.train_meter, self.eval_meters = StepLog(epoch + 1), {"val": Meter(), "test": Meter()}
        self.timer.reset()
        self.eval_timer.reset()
        return record

    def plateau_metric(self) -> str:
        """What ReduceLROnPlateau reads: the rank metric on val where [report] rank_by names one
        (its `mode` is checked against the metric's direction when the slot is built), else val_loss."""
        return "val_" + self.parts.rank_by.removeprefix("test_").removeprefix("val_") if self.parts.rank_by else "val_loss"

    def select_on(self) -> str | None:
        """The val metric a best epoch is chosen on without early stopping: the run's rank metric."""
        names = self.metric_names()
        rank = self.parts.rank_by or (names[0] if self.task is not None and self.task.kind != "classification" and names else None)
        return None if rank is None else "val_" + rank.removeprefix("test_").removeprefix("val_")

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self.rng.state_dict(),
            "status": self.status,
            "where": self.where,
            "error": self.error,
            "reported": self.reported,
            "eliminated_by": self.eliminated_by,
            "train_meter": self.train_meter.state_dict(),
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "selection": self.selection.state_dict() if self.selection else None,
            "best": None if self.best is None else {"epoch": self.best[0], "predictions": self.best[1]},
            "final": None if self.final is None else {"epoch": self.final[0], "predictions": self.final[1]},
            "scaler": self.scaler.state_dict() if self.scaler else None, "accumulated": self.parts.recipe.state_dict(self.params),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.rng.load_state_dict(state["rng"])
        self.status, self.where, self.error, self.reported = state["status"], state["where"], state["error"], state["reported"]
        self.eliminated_by = state["eliminated_by"]
        self.train_meter = StepLog.from_state(state["train_meter"], self.device)
        self.parts.recipe.load_state_dict(state.get("accumulated"), self.params)  # a checkpoint between accumulated batches
        if self.early_stopping is not None and state["early_stopping"] is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state["selection"] is not None:
            self.selection = BestEpoch(state["selection"]["metric"])
            self.selection.load_state_dict(state["selection"])
        best = state["best"]
        self.best = None if best is None else (best["epoch"], best["predictions"])
        final = state["final"]
        self.final = None if final is None else (final["epoch"], final["predictions"])
        if not self.live:
            self._release()


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """This epoch's lr: `lr` is the default group's (the optimizer's own arguments; NaN when
    `param_groups` take every parameter), `lr[<globs>]` each named group's (its "name", set by
    runner/assemble/finetune.py), so a backbone at a tenth of the head's lr shows as such."""
    default = [g["lr"] for g in optimizer.param_groups if "name" not in g]
    named = {f"lr[{g['name']}]": g["lr"] for g in optimizer.param_groups if "name" in g}
    return {"lr": default[0] if default else math.nan} | named

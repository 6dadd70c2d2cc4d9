"""A data-parallel slot: one model wrapped in DistributedDataParallel, behind the Slot interface.

Each rank trains its replica on its slice of the global batch; DDP averages the gradients
during backward, so every replica takes the same optimizer step. What differs from `Slot`:

- Before backward the ranks agree, in one small host-side all-reduce (gloo, no GPU sync),
  that the forward worked everywhere; the same all-reduce carries the slice sizes. A model
  that raised on one rank is then failed on every rank, instead of leaving the others
  waiting forever in DDP's gradient all-reduce.
- The backward loss is weighted by K * n_rank / n_global (K for a `sum` loss), so a last
  batch that splits unevenly still gives the single-process gradient: the mean over the
  global batch. With even slices the weight is exactly 1 and is not applied.
- Epoch metrics are sums over the ranks (loss sums, correct counts, sample counts), never
  means of means; test predictions are gathered in test order (contiguous shards).
- Random streams are per rank: rank 0 continues the model's own stream (so one process under
  torchrun is the plain single-process run), rank r > 0 a stream derived from (model seed, r),
  so dropout masks differ between the slices. `rank_state()` holds what is per rank.
"""
from __future__ import annotations

import traceback

import torch
from torch.nn.parallel import DistributedDataParallel

from compare import nested
from compare.engine.dist import Dist
from compare.errors import ModelFailedError
from compare.engine.numerics import CompiledForward
from compare.config.seeds import derive_seed
from compare.engine.rng import RngStream
from compare.engine.meters import Meter, concat
from compare.engine.slot import FAILED, RAISED, Slot, SlotParts, is_signal
from compare.engine.step_log import StepLog


class DDPSlot(Slot):
    def __init__(self, parts: SlotParts, dist: Dist):
        super().__init__(parts)  # `model` stays the bare module
        self.dist = dist
        self.failure_shared = False  # every rank knows this model failed, and where
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp: DistributedDataParallel | None = DistributedDataParallel(self.model, device_ids=device_ids)
        self.ddp_forward = CompiledForward(self.ddp, self.name, self.forward.mode) if isinstance(self.forward, CompiledForward) else self.ddp
        if dist.rank > 0:
            seed = self.rng.seed
            self.rng = RngStream(derive_seed(seed, f"rank{dist.rank}"), self.device)
            self.rng.seed = seed  # history's model_seed names the model's seed, not the rank's

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn, epoch: int, step: int) -> None:
        where = f"epoch {epoch} step {step}"
        self.timer.start()
        try:
            error = None
            try:
                with self.rng.active():
                    logits, loss = self.forward_loss(self.ddp_forward, x, y, loss_fn)
            except BaseException as err:  # noqa: BLE001 - agreed on below, before anyone enters backward
                if is_signal(err):
                    raise
                error = err
            failed, n_global = self.dist.host_sum([error is not None, nested.batch_size(y)])
            if failed:
                self._fail_agreed(error, where)
                return
            weight = self.dist.world * nested.batch_size(y) / n_global if getattr(loss_fn, "reduction", "mean") == "mean" else float(self.dist.world)
            with self.rng.active():
                self.optimizer.zero_grad(set_to_none=True)
                try:
                    weighted = loss if weight == 1.0 else loss * weight
                    (self.scaler.scale(weighted) if self.scaler else weighted).backward()
                except Exception as err:
                    # Part of DDP's gradient all-reduce may have run; the ranks cannot be brought
                    # back in step, so this process stops (torchrun then stops the others).
                    raise ModelFailedError(
                        f"model {self.name} raised in backward at {where} on rank {self.dist.rank}: {type(err).__name__}: {err}; "
                        "under DDP a backward failure stops the run (resume it from the last checkpoint once the model is fixed or removed)",
                        rank_local=True,  # only this rank knows: it prints the message
                    ) from err
                norms = self._optimizer_step()  # of the averaged gradient: equal on every rank
            self._record_step(loss, logits, y, loss_fn, norms, epoch, step)
        except ModelFailedError:
            raise
        except BaseException as err:  # noqa: BLE001 - an optimizer step that raised: settled by the engine's agreement
            self._fail(err, where)
        finally:
            self.timer.stop()

    # Evaluation runs the bare module (`Slot.eval_step`): no gradient sync, so a failure there
    # stays local until the engine's agreement after the evaluation pass.

    def _fail(self, err: BaseException, where: str) -> None:
        """Recorded on this rank only; the engine's agreement (`settle`) then fails the model on
        every rank, and applies --fail-fast on every rank together."""
        if is_signal(err) or isinstance(err, ModelFailedError):
            raise err
        self.status, self.where = FAILED, where
        self.error = "".join(traceback.format_exception(err))
        self._release()

    def settle(self, code: int, where: str) -> None:
        if code == RAISED and not self.failure_shared:  # raised on some rank: all learn which, and why
            self._fail_agreed(None, where, already=self.status == FAILED)
        else:
            super().settle(code, where)

    def _fail_agreed(self, error: Exception | None, where: str, already: bool = False) -> None:
        """Collective: called on every rank once the ranks agree that the model raised."""
        mine = None
        if error is not None:
            mine = (f"{type(error).__name__}: {error}", "".join(traceback.format_exception(error)))
        elif already:
            mine = (self.error.strip().splitlines()[-1] if self.error else "error", self.error)
        reports = self.dist.gather_objects(mine)
        rank, (summary, text) = next((r, m) for r, m in enumerate(reports) if m is not None)
        self.failure_shared = True
        if self.fail_fast:
            raise ModelFailedError(f"model {self.name} failed at {where} on rank {rank}: {summary} (--fail-fast)")
        if not already:
            self.status, self.where = FAILED, where
        self.error = f"on rank {rank} of {self.dist.world}:\n{text}"
        self._release()

    def _release(self) -> None:
        super()._release()
        self.ddp = None  # frees DDP's gradient buckets; a stopped model never steps again

    def end_epoch(self, epoch: int, last: bool = False) -> dict:
        self._reduce_train()
        for split, meter in self.eval_meters.items():
            self._reduce(meter)
            local = concat(self.eval_preds[split]) if self.eval_preds[split] else {}
            # every rank evaluated (the same model on its shard), so every rank has the same keys
            gathered = {k: self.dist.gather_cat(v) for k, v in local.items()}
            self.eval_preds[split] = [gathered] if gathered and len(gathered["target"]) else []
        return super().end_epoch(epoch, last)

    def _reduce_train(self) -> None:
        """The epoch's training sums over every rank (gradient norms are equal on every rank)."""
        loss_sum, hits, seen = self.train_meter.host_totals()
        sums = torch.tensor([loss_sum, 0.0 if hits is None else float(hits), float(seen)], dtype=torch.float64)
        loss_sum, hits, seen = self.dist.all_reduce(sums).tolist()
        self.train_meter.totals = (loss_sum, None if not self.train_meter.has_hits else int(hits), int(seen))

    def _reduce(self, meter: Meter) -> None:
        """The epoch's sums over every rank (loss sum, top-1 hits, samples): exact counts."""
        sums = torch.tensor(
            [float(meter.loss_sum), 0.0 if meter.correct is None else float(meter.correct), float(meter.seen), float(meter.correct is None)],
            dtype=torch.float64,
        )
        loss_sum, correct, seen, no_accuracy = self.dist.all_reduce(sums).tolist()
        meter.loss_sum, meter.seen = torch.tensor(loss_sum, dtype=torch.float64), int(seen)
        meter.correct = None if no_accuracy else int(correct)

    # ------------------------------------------------------------ checkpoints

    def rank_state(self) -> dict:
        """What differs between ranks: the random stream and the epoch's partial sums."""
        return {"rng": self.rng.state_dict(), "train_meter": self.train_meter.state_dict()}

    def load_rank_state(self, state: dict) -> None:
        self.rng.load_state_dict(state["rng"])
        self.train_meter = StepLog.from_state(state["train_meter"], self.device)

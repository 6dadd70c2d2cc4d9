"""A fused group: same-architecture models trained as one (DESIGN.md: another kind of slot).

The members' parameters and buffers are stacked along a new first dimension (as
`torch.func.stack_module_state` does); each batch runs one `vmap`ped forward, shared loss and
backward for every live member (`functional_call` on a meta-device template, randomness
"different"). Each member keeps everything else of its own:

- Its `model` is a real module whose parameters and buffers are views into the stacked
  tensors, so its state_dict, TensorBoard histograms and checkpoints read as a plain slot's,
  and its own optimizer steps them in place. After the backward, each member's `.grad` is its
  slice of the stacked gradient; then its optimizer (own lr, momentum, weight decay) and
  per-step scheduler step, exactly as `Slot` would.
- Its meters, grad norms, health code and status: the engine's health check quarantines one
  member only. A member that leaves the pass (diverged, failed, early-stopped) is dropped from
  the stack before the next step (re-stacked from the live ones), so its NaNs never reach the
  vmapped kernels of the others.
- Random draws (dropout) under vmap come from one generator: the group's own stream, derived
  from the experiment seed and the members' names. Initial weights still come from each
  member's own stream (built as unfused, then stacked).

If the vmapped step raises, the group dissolves (a warning says why): every member gets its own
storage back and trains as a plain slot from that step on.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch.func import functional_call, vmap

from compare import nested
from compare.errors import CompareWarning, one_line
from compare.engine.rng import RngStream
from compare.engine.meters import batch_loss_sum, top1_classes
from compare.engine.slot import Slot, SlotParts, is_signal
from compare.metrics.outputs import prediction
from compare.engine.timing import clock


def _compact(tensors: dict) -> dict:
    """Member tensors are views into the stack: torch.save would write the whole stack per
    member, so a checkpoint gets copies of just the member's slice."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


class FusedMember(Slot):
    """One model of a fused group; Slot-like for everything downstream (name, status, meters,
    end_epoch records, predictions, state_dict keyed by its name)."""

    def __init__(self, parts: SlotParts, group: "FusedGroup"):
        super().__init__(parts)
        self.group = group

    @property
    def unit(self):
        """What the engine steps: the group, or the member itself once the group dissolved."""
        return self if self.group.dissolved else self.group

    def own_storage(self) -> None:
        """Leave the stack: the member's parameters and buffers get storage of their own."""
        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                t.data = t.data.clone()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["model"] = _compact(state["model"])
        state["fused"] = {"group": self.group.label, "rng": self.group.rng.state_dict()}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)  # copies into the stacked tensors (the views)
        if state.get("fused") is not None:
            self.group.rng.load_state_dict(state["fused"]["rng"])


class FusedGroup:
    """The unit the engine steps for all live members at once (`train_step`, `eval_step`)."""

    def __init__(self, label: str, slots: list[Slot], rng: RngStream):
        self.label, self.rng = label, rng
        self.numerics = slots[0].numerics  # one config, one architecture: the members' precision
        self.device = slots[0].device
        self.template = copy.deepcopy(slots[0].model).to("meta")  # structure only; functional_call supplies tensors
        self.param_names = [n for n, _ in slots[0].model.named_parameters()]
        self.buffer_names = [n for n, _ in slots[0].model.named_buffers()]
        self.members = [FusedMember(s.parts, self) for s in slots]
        self.dissolved: str | None = None  # why the group stopped fusing
        self.stacked: list[FusedMember] = []  # members whose tensors are views into the stack, in stack order
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self._member_params: list[list[torch.Tensor]] = []
        self._restack()

    # ------------------------------------------------------------ stacking

    def _restack(self) -> None:
        """Stack the live members' current tensors; members that left get their own storage."""
        live = [m for m in self.members if m.live]
        for m in self.stacked:
            if m not in live:
                m.own_storage()
        params = [dict(m.model.named_parameters()) for m in live]
        buffers = [dict(m.model.named_buffers()) for m in live]
        self.params, self.buffers = {}, {}
        with torch.no_grad():
            for name in self.param_names:
                stack = torch.stack([p[name].detach() for p in params]).requires_grad_(params[0][name].requires_grad) if live else None
                self.params[name] = stack
                for i, p in enumerate(params):
                    p[name].data = stack.detach()[i]
            for name in self.buffer_names:
                stack = torch.stack([b[name] for b in buffers]) if live else None
                self.buffers[name] = stack
                for i, b in enumerate(buffers):
                    b[name].data = stack[i]
        self._member_params = [[p[name] for name in self.param_names] for p in params]
        self.stacked = live

    def dissolve(self, reason: str) -> None:
        """Stop fusing: every member trains as a plain slot from now on, with its own storage."""
        warnings.warn(f"fused group {self.label} ({', '.join(m.name for m in self.members)}): {reason}; training its models one by one from here", CompareWarning, stacklevel=2)
        for m in self.stacked:
            m.own_storage()
        self.stacked, self.params, self.buffers, self._member_params = [], {}, {}, []
        self.dissolved = reason

    def _live_stack(self) -> list[FusedMember]:
        live = [m for m in self.members if m.live]
        if live != self.stacked:
            self._restack()
        return live

    # ------------------------------------------------------------ steps

    def _vmapped(self, loss_fn):
        def member(params, buffers, x, y):
            args, kwargs = ((), x) if self.members[0].parts.spread else ((x,), None)  # model(**x) or model(x)
            output = functional_call(self.template, (params, buffers), args, kwargs)
            return loss_fn(output, y), prediction(output, self.members[0].parts.output_key)  # the loss sees the output as returned

        return vmap(member, in_dims=(0, 0, None, None), randomness="different")

    def step_all(self, x: torch.Tensor, y: torch.Tensor, loss_fn, epoch: int, step: int, live: list[FusedMember]) -> None:
        """One training step of every live member; raises if the vmapped part raises (before
        any member's weights change; BatchNorm statistics may have moved by then)."""
        for m in live:
            m.optimizer.zero_grad(set_to_none=True)
        for stack in self.params.values():
            stack.grad = None
        self.template.train()
        # The members' optimizer steps run on the group's stream too, as a slot's run on its own:
        # whatever they draw moves that stream on, never the caller's or another model's.
        with self.rng.active():
            with self.numerics.autocast(self.device):
                losses, logits = self._vmapped(loss_fn)(self.params, self.buffers, x, y)
            # Members' graphs are independent: the sum's gradient is each member's own.
            losses.sum().backward()
            grads = [stack.grad for stack in self.params.values()]
            norms = self._grad_norms(grads, len(live))
            where = f"epoch {epoch} step {step}"
            for i, m in enumerate(live):
                try:
                    for p, g in zip(self._member_params[i], grads):
                        p.grad = None if g is None else g[i]
                    m.optimizer.step()
                    if m.scheduler is not None and m.scheduler_interval == "step":
                        m.scheduler.step()
                except BaseException as err:  # noqa: BLE001 - one member's failure must not end the pass
                    m._fail(err, where)
        self._record(live, losses, logits, y, loss_fn, norms, epoch, step)

    @staticmethod
    def _record(live: list[FusedMember], losses, logits, y, loss_fn, norms, epoch: int, step: int) -> None:
        """`Slot._record_step` for every member, computed stacked (a few kernels, not a few per
        member); each member's train log gets views of its own entries."""
        losses = losses.detach()
        top1 = top1_classes(logits, y, dim=2)
        summed = getattr(loss_fn, "reduction", "mean") == "sum"
        for i, m in enumerate(live):
            if m.live:  # not failed in its optimizer step
                m.train_meter.epoch = epoch
                m.last_loss = losses[i]
                m.train_meter.record(m.last_loss, None if top1 is None else top1[i], y, (norms[i],), nested.batch_size(y), step, summed)

    @staticmethod
    def _grad_norms(grads: list, n: int) -> torch.Tensor:
        """Each member's total gradient L2 norm (as `get_total_norm` over its own gradients)."""
        per_tensor = [torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in grads if g is not None]
        return torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1) if per_tensor else torch.zeros(n)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn, epoch: int, step: int) -> None:
        live = self._live_stack()
        start = clock(self.device)
        try:
            self.step_all(x, y, loss_fn, epoch, step, live)
        except BaseException as err:  # noqa: BLE001 - the vmapped step itself: fall back to one by one
            if is_signal(err):
                raise
            self.dissolve(f"its vmapped step raised {type(err).__name__}: {one_line(err)}")
            for m in live:
                m.train_step(x, y, loss_fn, epoch, step)
            return
        self._share(start, live, "timer")

    def eval_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn, epoch: int, split: str = "test") -> None:
        """One val or test batch for every live member; the caller holds `torch.no_grad()`."""
        live = self._live_stack()
        start = clock(self.device)
        try:
            self.template.eval()
            with self.rng.active(), self.numerics.autocast(self.device):
                losses, logits = self._vmapped(loss_fn)(self.params, self.buffers, x, y)
        except BaseException as err:  # noqa: BLE001
            if is_signal(err):
                raise
            self.dissolve(f"its vmapped evaluation raised {type(err).__name__}: {one_line(err)}")
            for m in live:
                m.eval_step(x, y, loss_fn, epoch, split)
            return
        sums = batch_loss_sum(losses, nested.batch_size(y), loss_fn)
        for i, m in enumerate(live):
            m.keep(split, logits[i], y, sums[i])
        self._share(start, live, "eval_timer")

    def _share(self, start, live: list[FusedMember], which: str) -> None:
        end = clock(self.device)
        for m in live:
            getattr(m, which).add_share(start, end, 1.0 / len(live))



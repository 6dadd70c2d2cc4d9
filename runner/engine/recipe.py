"""The per-step parts of a model's training recipe: gradient accumulation and clipping.

`[experiment] accumulate = k`: each model steps its optimizer every k batches (and on the
remainder at the end of an epoch whose batch count is not a multiple of k). Each batch's
backward adds its share of the group's mean: a mean-reduced loss is weighted by
size / (k x batch_size), a `reduction = "sum"` loss is summed as it is; a group shorter than
k x batch_size (the epoch's remainder, a short last batch) has its gradients scaled to the mean
over the samples it had. So k batches of b give the gradient one batch of k x b gives, and a
per-step scheduler, the gradient norms and the health check see optimizer steps.

`clip_grad_norm` / `clip_grad_value` (torch.nn.utils' own functions) run after fp16 unscaling
and before the step; the gradient-norm columns keep the norm before clipping.

With neither set a step is exactly the plain loop's: zero_grad, backward of the loss, step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepRecipe:
    accumulate: int = 1  # batches per optimizer step
    batch_size: int = 1  # the configured batch size (a full group holds accumulate x batch_size samples)
    batches: int = 0  # batches per epoch (the last group steps on the remainder); 0: unknown
    clip_norm: float | None = None
    clip_value: float | None = None
    samples: int = 0  # samples in the group accumulated so far

    def starts(self, step: int) -> bool:
        """Whether this batch opens a group: its gradients start from zero."""
        return step % self.accumulate == 0

    def due(self, step: int) -> bool:
        """Whether the optimizer steps after this batch: a full group, or the epoch's last batch."""
        return (step + 1) % self.accumulate == 0 or step + 1 == self.batches

    def share(self, loss: torch.Tensor, size: int, loss_fn, step: int) -> torch.Tensor:
        """What this batch's backward runs on: the loss itself without accumulation."""
        if self.accumulate == 1:
            return loss
        self.samples = size if self.starts(step) else self.samples + size
        if getattr(loss_fn, "reduction", "mean") == "sum":
            return loss
        return loss * (size / (self.accumulate * self.batch_size))

    def norms(self, grads: list[torch.Tensor], params: list[torch.nn.Parameter], loss_fn) -> list[torch.Tensor]:
        """Before the step, after fp16 unscaling: a short group's gradients scaled to its own
        mean, each gradient's norm (one fused `_foreach_norm`), then clipping. Returns the norms."""
        full = self.accumulate * self.batch_size
        if self.accumulate > 1 and self.samples and self.samples != full and getattr(loss_fn, "reduction", "mean") != "sum" and grads:
            torch._foreach_mul_(grads, full / self.samples)
        self.samples = 0
        norms = torch._foreach_norm(grads) if grads else []
        self.clip(params)  # the norms above stay the pre-clip ones
        return norms

    def clip(self, params: list[torch.nn.Parameter]) -> None:
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_value)

    # ------------------------------------------------------------ checkpoints (mid-group)

    def state_dict(self, params: list[torch.nn.Parameter]) -> dict | None:
        """A checkpoint between a group's batches holds the gradients accumulated so far."""
        if self.accumulate == 1 or not self.samples:
            return None
        return {"samples": self.samples, "grads": [None if p.grad is None else p.grad.detach().clone() for p in params]}

    def load_state_dict(self, state: dict | None, params: list[torch.nn.Parameter]) -> None:
        self.samples = 0 if state is None else state["samples"]
        for p, grad in zip(params, [] if state is None else state["grads"]):
            p.grad = None if grad is None else grad.to(p.device)

"""The ranks of a run and the few collectives the shared pass needs (sums, agreement,
gathering to rank 0). Outside torchrun everything here is a no-op on a `Dist()` of world size
1, so the single-process path runs exactly as before. The process group itself is set up by
runner/run/distributed.py (`session`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from compare.errors import PeerError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run
    enabled: bool = False
    host_group: Any = None  # gloo group for host-side values: agreeing on them never waits for the GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -------------------------------------------------------------- collectives

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        """A reduced copy, on the tensor's own device (gloo needs CPU, nccl the rank's GPU)."""
        if not self.enabled:
            return tensor
        moved = tensor.detach().to(self.device).clone()
        dist.all_reduce(moved, op=op)
        return moved.to(tensor.device)

    def all_max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(tensor, dist.ReduceOp.MAX)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.host_group)
        return out

    def host_sum(self, values: list[int]) -> list[int]:
        """Sum small host-side integers over the ranks (gloo, CPU): no device sync."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, group=self.host_group)
        return tensor.tolist()

    def gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's CPU tensor in rank order: contiguous shards back in order."""
        if not self.enabled:
            return tensor
        return torch.cat(self.gather_objects(tensor.cpu()))

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on rank 0 only and hand its result to every rank. A typed error there is
        raised on every rank (as `PeerError` on the others), so nobody waits on a dead peer."""
        if not self.enabled:
            return fn()
        outcome: list[Any] = [None]
        error: Exception | None = None
        if self.main:
            try:
                outcome = [("ok", fn())]
            except Exception as err:  # noqa: BLE001 - re-raised below, after the peers are told
                error = err
                outcome = [("error", (str(err), getattr(err, "exit_code", 1)))]
        dist.broadcast_object_list(outcome, src=0, group=self.host_group)
        kind, value = outcome[0]
        if kind == "error":
            if error is not None:
                raise error
            raise PeerError(f"rank {self.rank}: rank 0 stopped: {value[0]}", value[1])
        return value

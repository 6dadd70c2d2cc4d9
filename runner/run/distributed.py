"""Data parallelism plumbing: the process group from torchrun's environment, rank helpers,
and the few collectives the shared pass needs (sums, agreement, gathering to rank 0).

Outside torchrun everything here is a no-op on a `Dist()` of world size 1, so the
single-process path runs exactly as before.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from runner.errors import DeviceError, PeerError

# What torchrun (and other env:// launchers) set for every worker.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True in a worker started by torchrun (or any launcher that sets the env:// variables)."""
    return all(key in os.environ for key in LAUNCH_ENV)


def restart_count() -> int:
    """How often torchrun has restarted the workers (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


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


def resolve_rank_device(spec: str, local_rank: int) -> torch.device:
    """Under torchrun each process drives one device: cuda:LOCAL_RANK, or the CPU."""
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"experiment.device: {spec!r} asked for, but torch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {local_rank} needs cuda:{local_rank}, but this node has {torch.cuda.device_count()} GPU(s); lower --nproc_per_node")
        return torch.device("cuda", local_rank)
    raise DeviceError(f"experiment.device: {spec!r} cannot be used under torchrun: each process uses cuda:LOCAL_RANK (\"cuda\" or \"auto\") or \"cpu\"")


@contextmanager
def session(device_spec: str):
    """The process group for one run: set up from torchrun's environment (nccl on CUDA, gloo
    on the CPU) and torn down at the end, unless the caller had set one up already."""
    if not launched():
        yield Dist()
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_rank_device(device_spec, local_rank)
    created = not dist.is_initialized()
    if created:
        # The store outlives a torchrun restart (agent store); without a per-attempt prefix the
        # restarted ranks read their peers' addresses from the previous attempt and never connect.
        store, rank, world = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"compare/attempt_{restart_count()}", store)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", store=store, rank=rank, world_size=world, device_id=device)
        else:
            dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    # Host-side agreement (did a forward raise? the batch sizes) goes over gloo, so it never
    # forces a GPU sync; on the CPU the default group already is gloo.
    host = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    try:
        yield Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, enabled=True, host_group=host)
    finally:
        if created:
            dist.destroy_process_group()

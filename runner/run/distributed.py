"""The process group from torchrun's environment (`session`) and the device each rank drives.
The ranks and their collectives (`Dist`) live below, in runner/engine/dist.py: the engine's
DDP slot needs them. Outside torchrun `session` yields a `Dist()` of world size 1."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from compare.engine.dist import Dist
from compare.errors import DeviceError
from compare.run.launch import launched, restart_count


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

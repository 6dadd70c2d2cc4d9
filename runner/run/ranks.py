"""`--place models` (runner/run/placement.py chooses it): the models spread over torchrun's ranks.

Each rank trains its own share of the models (the shards' assignment, runner/run/shards.py:
rank r trains shard r+1 of N) on its own device, over the SAME full batches: every rank loads
and decodes every batch itself, as one process would; no DistributedSampler slicing, no
gradient communication. A rank's share is a single-process run of that shard, written into a
hidden folder of the run directory, `RUN/.shards/shard-<r+1>-of-<N>/` (its own lock, checkpoints
and resume). Once every rank has finished (a barrier), rank 0 merges the shards into RUN
(runner/run/merge.py), so RUN is bitwise the run one process would have written.

Why shard folders and a merge rather than gathering the models' outputs to rank 0: each rank
checkpoints, resumes and reports its models exactly as a shard job does (one code path, one
contract, tested once), a rank never holds another rank's weights or predictions in memory,
and a worker that torchrun restarts (a lost process or node) resumes its own folder from its
newest checkpoint while the others find theirs finished. The price: RUN must be on storage
every node can reach (a shared filesystem) on several nodes, as it must be already for rank 0
to resume after a restart moves it.

The process group is gloo on every device, with a long timeout: the ranks talk only at the
start (rank 0 claims RUN first) and at the end (the barrier), and a rank with the lighter share
may wait at the barrier for hours. Racing compares every model at each look: the ranks meet
there through files (RaceLooks), so every rank decides on all the models, as one process would.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
import torch.distributed as dist

from compare import atomic
from compare.errors import RunDirError
from compare.engine.dist import Dist
from compare.report.leaderboard import searched_families
from compare.run.launch import restart_count
from compare.run.merge import final_state, read_shards, refuse_unrebuildable, write_merged
from compare.rundir.guard import claim_run_dir, holds_a_run
from compare.rundir.layout import CONFIG, HISTORY, LOOKS, SHARDS, shard_folder
from compare.run.shards import Shard

BARRIER_TIMEOUT = timedelta(days=7)  # the lightest share may wait this long for the heaviest
POLL_S = 0.05


class RaceLooks:
    """Racing under --place models (runner/engine/race.py): at each planned look every rank
    writes its live models' val statistics to a file, reads every rank's, and decides on all the
    models in config order, exactly as one process decides; each rank then eliminates its own.

    Files rather than a collective: after torchrun restarts the workers, they resume from
    different checkpoints, and a rank that replays the look of epoch e finds the other ranks'
    statistics of e still there (they are past it). A rank whose pass ends before the last look
    (its models eliminated, diverged or failed) writes empty files for the looks it will not reach.
    """

    def __init__(self, folder: Path, rank: int, world: int, order: list[str]):
        self.folder, self.rank, self.world, self.order = Path(folder), rank, world, order

    def _path(self, seed: int, epoch: int, rank: int) -> Path:
        return self.folder / f"seed-{seed}" / f"epoch-{epoch}" / f"rank-{rank}.pt"

    def _write(self, seed: int, epoch: int, live: dict) -> None:
        path = self._path(seed, epoch, self.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_write(path) as f:  # a replayed look writes the same bytes again
            torch.save(live, f)

    def _read(self, seed: int, epoch: int, rank: int) -> dict:
        path, deadline = self._path(seed, epoch, rank), time.monotonic() + BARRIER_TIMEOUT.total_seconds()
        while not path.exists():  # a lost rank makes torchrun stop (or restart) every worker
            if time.monotonic() > deadline:
                raise RunDirError(f"rank {rank} did not reach the race look after epoch {epoch} (seed {seed}) in {BARRIER_TIMEOUT}: {path} is missing")
            time.sleep(POLL_S)
        return torch.load(path, weights_only=True)

    def exchange(self, seed: int, epoch: int, live: dict[str, dict]) -> dict[str, dict]:
        """Every rank's live models' val statistics at this look, in config order."""
        self._write(seed, epoch, live)
        everyone: dict[str, dict] = {}
        for rank in range(self.world):
            everyone |= live if rank == self.rank else self._read(seed, epoch, rank)
        return {name: everyone[name] for name in self.order if name in everyone}

    def pass_ended(self, seed: int, epochs: list[int]) -> None:
        """This rank's pass of `seed` ended before these looks: it has no live model at them."""
        for epoch in epochs:
            self._write(seed, epoch, {})


@contextmanager
def placement_group() -> Iterator[Dist]:
    """A gloo group over torchrun's ranks, for the claim and the barrier only; the CUDA device
    (if any) is cuda:LOCAL_RANK, so `experiment.device = "cuda"` or "auto" lands there."""
    store, rank, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"compare/place_{restart_count()}", store)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
    try:
        yield Dist(rank, world, local, torch.device("cpu"), enabled=True)
    finally:
        dist.destroy_process_group()


def shard_dir(run_dir: Path, shard: Shard) -> Path:
    return shard_folder(run_dir, shard.index, shard.count)


def run_placed(experiment, run_dir=None, overwrite: bool = False, resume: bool = False, plots: bool = True, **options):
    """Experiment.run with the models spread over the ranks; rank 0 returns the merged run's
    RunResult, the others their shard's. A torchrun restart resumes each rank's folder."""
    from compare.run.experiment import Experiment, RunResult  # noqa: PLC0415 - experiment sits above this module's callers

    cfg = experiment.config
    run_dir = Path(run_dir) if run_dir is not None else experiment.default_run_dir()
    resuming = resume or restart_count() > 0
    with placement_group() as group, ExitStack() as lock:
        shard = Shard(group.rank + 1, group.world)
        mine = shard_dir(run_dir, shard)

        def claim() -> None:  # rank 0 holds RUN for the whole run (--overwrite clears it first)
            fresh = not (resuming and holds_a_run(run_dir))
            lock.enter_context(claim_run_dir(run_dir, fresh=fresh, overwrite=overwrite))

        group.from_main(claim)
        looks = RaceLooks(Path(run_dir) / SHARDS / LOOKS, group.rank, group.world, [m.name for m in cfg.models]) if cfg.experiment.race else None
        own = Experiment(cfg, shard=shard, looks=looks)
        result = own.run(mine, resume=resuming and (mine / CONFIG).exists(), plots=False, single=True, **options)
        dist.barrier()
        if not group.main:
            return result
        shards = read_shards([shard_dir(run_dir, Shard(i, group.world)) for i in range(1, group.world + 1)])
        states = [final_state(s) for s in shards]
        refuse_unrebuildable(shards, states)
        board = write_merged(shards, states, run_dir, plots=plots)
        history = pd.read_csv(run_dir / HISTORY)
        return RunResult(run_dir, board.table, history, notes=list(board.evidence.notes), searched=searched_families(cfg.families))

"""THE place a run's data and its batch streams are made.

    load_data      the run's datasets: the adapter's train, val (its own, the held-out share
                   of train: runner/data/splits.py, or none) and test, or with `data.cache`
                   the same samples decoded once into tensors (runner/data/cache.py)
    batch_samplers one seed's train and test batches as index lists, sharded under torchrun
    make_streams   those batches as streams: a DataLoader over a dataset, or a CachedLoader
                   indexing the decoded tensors; both draw the same indices from the same
                   seeded generator, so either path yields the same batches
    first_batches  a fresh stream's first batches, moving no random stream (fusing, dry run)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from compare import nested
from compare.resolve import components
from compare.config.schema import Config
from compare.data.cache import CachedData, CachedLoader, load_cached_data
from compare.data.collate import collate_for
from compare.data.sampler import ResumableRandomSampler, ShardedBatchSampler, shard_bounds
from compare.data.splits import check_val_split
from compare.config.seeds import derive_seed
from compare.engine.rng import RngStream, preserved_rng

DATA_STREAM = "<data>"  # name the data pipeline's random stream is derived from


def load_data(cfg: Config, device: torch.device):
    """The run's datasets (train, val or None, test); with `data.cache`, decoded once into
    tensors that every seed's pass indexes. A decision that reads val without one is refused."""
    if cfg.data.cache == "none":
        data = components.load_dataset(cfg.data, cfg.base_dir, seed=cfg.experiment.seed)
    else:
        data = load_cached_data(cfg.data, cfg.base_dir, cfg.experiment.seed, device, cfg.source)
    check_val_split(cfg, data.val is not None)
    return data


@dataclass
class Streams:
    """One seed's batch streams and the random state behind them (what a checkpoint saves)."""

    train: DataLoader | CachedLoader
    test: DataLoader | CachedLoader
    sampler: ResumableRandomSampler  # its `skip` starts an epoch part-way (resume)
    train_gen: torch.Generator  # draws the permutation (and a DataLoader's worker seed)
    test_gen: torch.Generator  # its own: iterating the test set draws from no model's stream
    data_rng: RngStream  # augmentation's stream, active while a batch is made
    val: DataLoader | CachedLoader | None = None  # in order, like test; None: no val split
    val_gen: torch.Generator | None = None


def batch_samplers(sampler: ResumableRandomSampler, test_size: int, batch_size: int, eval_batch_size: int, rank: int = 0, world: int = 1) -> tuple[Sampler[list[int]], Sampler[list[int]]]:
    """(train, test) batches of indices. Batch sizes stay global under data parallelism: each
    rank takes its slice of every train batch and its contiguous shard of the test set."""
    if world > 1:
        return ShardedBatchSampler(sampler, batch_size, rank, world), eval_batches(test_size, eval_batch_size, rank, world)
    return BatchSampler(sampler, batch_size, drop_last=False), eval_batches(test_size, eval_batch_size)


def eval_batches(size: int, eval_batch_size: int, rank: int = 0, world: int = 1) -> Sampler[list[int]]:
    """An evaluation split (val or test) in order; under torchrun this rank's contiguous shard."""
    if world > 1:
        return BatchSampler(shard_bounds(size, rank, world), -(-eval_batch_size // world), drop_last=False)
    return BatchSampler(range(size), eval_batch_size, drop_last=False)


def make_streams(data, seed: int, batch_size: int, eval_batch_size: int, device: torch.device, rank: int = 0, world: int = 1, num_workers: int = 0) -> Streams:
    """`data` (PreparedData or CachedData) as seed `seed`'s train and test streams on this rank.

    The DataLoader path is, batch for batch, `DataLoader(train, batch_size, shuffle=True,
    generator=torch.Generator().manual_seed(seed))` (the plain-loop contract)."""
    train_gen = torch.Generator().manual_seed(seed)
    test_gen = torch.Generator().manual_seed(seed)
    sampler = ResumableRandomSampler(data.train, generator=train_gen)
    train_batches, test_batches = batch_samplers(sampler, len(data.test), batch_size, eval_batch_size, rank, world)
    workers = {"num_workers": num_workers, "pin_memory": device.type == "cuda", "persistent_workers": num_workers > 0, "collate_fn": collate_for(data)}

    def stream(split, batches, generator):  # the same batches, from the decoded tensors or the dataset
        if isinstance(data, CachedData):
            return CachedLoader(split, batches, device, generator)
        return DataLoader(split, batch_sampler=batches, generator=generator, **workers)

    val, val_gen = None, None
    if getattr(data, "val", None) is not None:  # its own generator: the val pass moves neither test's nor a model's stream
        val_gen = torch.Generator().manual_seed(seed)
        val = stream(data.val, eval_batches(len(data.val), eval_batch_size, rank, world), val_gen)
    # Augmentation draws are per rank (each rank augments its own slice); rank 0 keeps the
    # single-process stream.
    data_rng = RngStream(derive_seed(seed, DATA_STREAM if rank == 0 else f"{DATA_STREAM}/rank{rank}"), torch.device("cpu"))
    return Streams(stream(data.train, train_batches, train_gen), stream(data.test, test_batches, test_gen), sampler, train_gen, test_gen, data_rng, val, val_gen)


def config_streams(cfg: Config, seed: int, data, device: torch.device, rank: int = 0, world: int = 1, num_workers: int | None = None) -> Streams:
    """make_streams with the batch sizes and workers of `cfg.data`."""
    d = cfg.data
    workers = d.num_workers if num_workers is None else num_workers
    return make_streams(data, seed, d.batch_size, d.eval_batch_size, device, rank, world, workers)


def first_batches(cfg: Config, seed: int, data, device: torch.device, n: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `n` train batches seed `seed`'s pass trains on (one process, no workers), on
    `device`. The stream is a fresh one and the global generators are preserved around it,
    so no model's stream, the pass's data stream or the caller's state moves."""
    streams = config_streams(cfg, seed, data, device, num_workers=0)
    with preserved_rng([device]), streams.data_rng.active():
        return [(nested.to(x, device), nested.to(y, device)) for x, y in itertools.islice(streams.train, n)]

"""The shuffling sampler, able to start an epoch part-way through (resume from a step checkpoint),
and its data-parallel form: each rank's slice of the same global batches."""
from __future__ import annotations

import itertools

from torch.utils.data import RandomSampler, Sampler


class ResumableRandomSampler(RandomSampler):
    """Exactly `RandomSampler(data, generator=g)` (what `DataLoader(shuffle=True, generator=g)`
    builds, so the same draws from `g`), except that the next epoch can skip its first
    `skip` indices: the permutation is replayed from the saved generator state, nothing is loaded."""

    def __init__(self, data_source, generator):
        super().__init__(data_source, generator=generator)
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank `rank`'s share of each global batch, for data parallelism.

    Every rank runs the same seeded `sampler` (the single-process permutation, skip included),
    cuts it into global batches of `batch_size` and keeps the `rank`-th contiguous slice of
    each. The union of the ranks' batches at each step is exactly the single-process batch,
    with no sample padded in or dropped. Slices of a batch differ in size by at most one; a
    final batch smaller than the world size would leave a rank empty and is refused upstream.
    """

    def __init__(self, sampler: ResumableRandomSampler, batch_size: int, rank: int, world: int):
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __iter__(self):
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield self._share(batch)
                batch = []
        if batch:
            yield self._share(batch)

    def _share(self, batch: list[int]) -> list[int]:
        n = len(batch)
        return batch[self.rank * n // self.world : (self.rank + 1) * n // self.world]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


def shard_bounds(n: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous share of `n` ordered samples (test set): concatenating the
    shards in rank order gives the original order back, each sample exactly once."""
    return range(rank * n // world, (rank + 1) * n // world)

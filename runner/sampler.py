"""The shuffling sampler, able to start an epoch part-way through (resume from a step checkpoint)."""
from __future__ import annotations

import itertools

from torch.utils.data import RandomSampler


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

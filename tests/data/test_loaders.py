"""runner/data/loaders.py, the one place batch streams are made: the DataLoader path and the
cached path draw the same indices (sharded or not, resumed part-way or not), and the first
batches fusing and the dry run use are the pass's own, drawn without moving a random stream."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from compare.resolve import components
from compare.assemble.validate import config_from_dict
from compare.data.batch_augment import BatchPipeline, Crop
from compare.data.cache import CachedData, CachedSplit
from compare.data.loaders import config_streams, first_batches, make_streams
from compare.engine.loop import seeded_batches
from compare.engine.rng import RngStream
from tests.helpers import digits_config, mlp

CPU = torch.device("cpu")
N_TRAIN, N_TEST = 23, 11


def index_data(cached: bool):
    """Samples whose label is their index, as a dataset pair or as decoded tensors."""
    images = {n: torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) for n in (N_TRAIN, N_TEST)}
    labels = {n: torch.arange(n) for n in (N_TRAIN, N_TEST)}
    if cached:
        split = {n: CachedSplit(images[n], labels[n], BatchPipeline(finish=False)) for n in (N_TRAIN, N_TEST)}
        return CachedData(split[N_TRAIN], split[N_TEST], (1, 1, 1), [str(i) for i in range(N_TRAIN)])
    return SimpleNamespace(train=TensorDataset(images[N_TRAIN], labels[N_TRAIN]), test=TensorDataset(images[N_TEST], labels[N_TEST]))


def indices(data, rank: int, world: int, skip_steps: int = 0) -> tuple[list, list, torch.Tensor]:
    """(train batches, test batches) as index lists over two epochs, and the generator's state after."""
    streams = make_streams(data, seed=3, batch_size=5, eval_batch_size=4, device=CPU, rank=rank, world=world)
    train, test = [], []
    for epoch in range(2):
        streams.sampler.skip = skip_steps * 5 if epoch == 0 else 0
        train.append([y.tolist() for _, y in streams.train])
        test.append([y.tolist() for _, y in streams.test])
    return train, test, streams.train_gen.get_state()


@pytest.mark.parametrize("world, skip_steps", [(1, 0), (1, 2), (2, 0), (3, 1)])
def test_the_dataloader_and_the_cache_draw_the_same_indices(world, skip_steps):
    for rank in range(world):
        plain, cached = indices(index_data(False), rank, world, skip_steps), indices(index_data(True), rank, world, skip_steps)
        assert plain[0] == cached[0] and plain[1] == cached[1], (rank, world)
        assert torch.equal(plain[2], cached[2])  # the same draws from the generator


@pytest.mark.parametrize("cached", [False, True])
def test_the_ranks_slices_make_up_the_single_process_batches(cached):
    whole_train, whole_test, _ = indices(index_data(cached), 0, 1)
    ranks = [indices(index_data(cached), rank, 2) for rank in range(2)]
    for epoch in range(2):
        assert [a + b for a, b in zip(ranks[0][0][epoch], ranks[1][0][epoch], strict=True)] == whole_train[epoch]
        assert sum(ranks[0][1][epoch] + ranks[1][1][epoch], []) == sum(whole_test[epoch], [])
    assert whole_train[0] != whole_train[1]  # the permutation moves on between epochs


def test_the_dataloader_path_is_the_plain_loop():
    data = index_data(False)
    expected = [y.tolist() for _, y in torch.utils.data.DataLoader(data.train, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(3))]
    assert indices(data, 0, 1)[0][0] == expected


def augmented_cache(cfg, seed: int = 0) -> CachedData:
    """The digits, decoded, with a random crop and flip on every train batch (draws from the data stream)."""
    data = components.load_dataset(cfg.data, cfg.base_dir, seed=seed)
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    y = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    t = torch.stack([data.test[i][0] for i in range(len(data.test))])
    u = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    train = CachedSplit(x, y, BatchPipeline(Crop((6, 6), (1, 1, 1, 1)), flip=0.5, finish=True))
    return CachedData(train, CachedSplit(t, u, BatchPipeline(finish=False)), (1, 6, 6), list(data.classes))


@pytest.mark.parametrize("cached", [False, True])
def test_first_batches_are_the_pass_first_batches_and_move_no_stream(cached):
    cfg = config_from_dict(digits_config([mlp("a")], batch_size=50))
    data = augmented_cache(cfg) if cached else components.load_dataset(cfg.data, cfg.base_dir, seed=0)
    before = torch.get_rng_state()
    first = first_batches(cfg, 7, data, CPU, n=2)
    assert torch.equal(torch.get_rng_state(), before)
    streams = config_streams(cfg, 7, data, CPU)
    expected = [b for _, b in zip(range(2), seeded_batches(streams.train, streams.data_rng))]
    assert len(first) == 2
    for (x0, y0), (x1, y1) in zip(first, expected, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    if cached:  # the crops and flips are the data stream's: another stream augments the same samples otherwise
        other = config_streams(cfg, 7, data, CPU)
        x, y = next(seeded_batches(other.train, RngStream(1, CPU)))
        assert torch.equal(y, first[0][1]) and not torch.equal(x, first[0][0])

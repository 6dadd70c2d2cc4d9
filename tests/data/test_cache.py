"""The cached data path (`data.cache`): the same batches as the DataLoader path, per-sample
augmentation on the batch tensor from the data stream only, resume, the disk cache, errors."""
from __future__ import annotations

import signal
import tomllib

import pandas as pd
import pytest
import torch
from scipy import stats
from torchvision.transforms.v2 import functional as TF

from compare.resolve import components

from compare.data import cache as datacache

from compare.config import tomlio
from compare.data.batch_augment import BatchPipeline, Crop, crop_and_flip
from compare.assemble.validate import config_from_dict
from compare.data.cache import load_cached_data
from compare.engine.loop import seeded_batches
from compare.errors import CompareWarning, ConfigError
from compare.engine.rng import RngStream
from compare.run.shared_pass import SharedPass
from tests.helpers import compare, digits_config, history, killable, launch, mlp

CPU = torch.device("cpu")


def folder_config(root, epochs: int = 1, **data) -> dict:
    """cifar10 read from the tiny class-folder copy: PIL decode, ToImage, ToDtype, Normalize."""
    raw = digits_config([mlp("a")], epochs=epochs, root=str(root), batch_size=5, eval_batch_size=3, **data)
    raw["data"]["dataset"] = "cifar10"
    return raw


def both_passes(raw: dict) -> tuple[SharedPass, SharedPass]:
    """The DataLoader path's pass and the cached path's pass of one config (no models)."""
    passes = []
    for cache in ("none", "memory"):
        cfg = config_from_dict(raw | {"data": raw["data"] | {"cache": cache}})
        d = cfg.data
        data = components.load_dataset(d, cfg.base_dir, seed=0) if cache == "none" else load_cached_data(d, cfg.base_dir, 0, CPU)
        passes.append(SharedPass(cfg, 0, [], data, None, CPU))
    return passes[0], passes[1]


def epoch_batches(shared: SharedPass) -> list:
    return list(seeded_batches(shared.train_loader, shared.data_rng))


@pytest.mark.parametrize("dataset", ["folder", "digits"])
def test_cached_batches_equal_the_dataloader_batches(tiny_image_folder, dataset):
    raw = folder_config(tiny_image_folder) if dataset == "folder" else digits_config([mlp("a")], batch_size=100, eval_batch_size=128)
    plain, cached = both_passes(raw)
    assert len(cached.train_loader) == len(plain.train_loader) and len(cached.test_loader) == len(plain.test_loader)
    for _ in range(2):  # two epochs: the permutation moves on alike
        expected, got = epoch_batches(plain), epoch_batches(cached)
        assert len(got) == len(expected)
        for (x0, y0), (x1, y1) in zip(expected, got):
            assert torch.equal(y0, y1) and x0.dtype == x1.dtype == torch.float32
            torch.testing.assert_close(x1, x0, rtol=0, atol=1e-6)
    for (x0, y0), (x1, y1) in zip(plain.test_loader, cached.test_loader, strict=True):
        assert torch.equal(y0, y1)
        torch.testing.assert_close(x1, x0, rtol=0, atol=1e-6)
    assert torch.equal(plain.train_gen.get_state(), cached.train_gen.get_state())  # the same draws


def test_cached_resume_skips_like_the_sampler(tiny_image_folder):
    """Mid-epoch: replaying the epoch's generator state with `sampler.skip` gives the tail."""
    _, cached = both_passes(folder_config(tiny_image_folder))
    start = cached.train_gen.get_state()
    full = epoch_batches(cached)
    cached.train_gen.set_state(start)
    cached.sampler.skip = 2 * 5  # two steps of batch_size 5 done
    tail = epoch_batches(cached)
    assert [torch.equal(a[1], b[1]) for a, b in zip(full[2:], tail, strict=True)] == [True] * len(tail)


# ---------------------------------------------------------------- augmentation on the batch


def coordinates(n: int, size: int = 32) -> torch.Tensor:
    """n identical uint8 images whose channels hold (row + 1, column + 1, 7): a pixel says where it came from."""
    rows = torch.arange(1, size + 1, dtype=torch.uint8)[:, None].expand(size, size)
    image = torch.stack([rows, rows.T, torch.full((size, size), 7, dtype=torch.uint8)])
    return image.expand(n, 3, size, size).contiguous()


def test_crop_and_flip_matches_v2_per_sample():
    """Each sample equals torchvision's pad -> crop -> hflip with that sample's drawn offsets."""
    x = torch.randint(0, 256, (16, 3, 20, 24), dtype=torch.uint8)
    crop = Crop((18, 24), (4, 4, 2, 2))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        out = crop_and_flip(x, crop, 0.5)
        torch.manual_seed(3)  # replay the draws: rows, columns, flips
        tops, lefts, flips = torch.randint(0, 24 - 18 + 1, (16,)), torch.randint(0, 32 - 24 + 1, (16,)), torch.rand(16) < 0.5
    assert 0 < int(flips.sum()) < 16 and len(set(zip(tops.tolist(), lefts.tolist()))) > 1
    for i in range(16):
        ref = TF.crop(TF.pad(x[i], [4, 2, 4, 2], fill=0), int(tops[i]), int(lefts[i]), 18, 24)
        assert torch.equal(out[i], TF.horizontal_flip(ref) if flips[i] else ref), i


def test_per_sample_randomness_and_its_distribution():
    n = 9000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = crop_and_flip(coordinates(n), Crop((32, 32), (4, 4, 4, 4)), 0.5)
    # The centre pixel (16, 16) of a crop at (top, left) is image pixel (top + 12, left + 12),
    # or (top + 12, left + 11) when flipped: a flip reverses the row of column numbers.
    flipped = out[:, 1, 16, 16] > out[:, 1, 16, 17]
    top = out[:, 0, 16, 16].long() - 13
    left = out[:, 1, 16, 16].long() - 13 + flipped.long()
    assert len(set(zip(top[:20].tolist(), left[:20].tolist(), flipped[:20].tolist()))) > 10  # per sample, not per batch
    assert abs(flipped.float().mean().item() - 0.5) < 0.03  # binomial sd 0.005
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9  # offsets 0..8: padding 4 each side
        assert stats.chisquare(counts.numpy()).pvalue > 1e-4  # uniform
    zero_rows = (out[:, 2, :4, 16] == 0).sum(dim=1)  # padding is zeros, before normalisation
    assert torch.equal(zero_rows, (4 - top).clamp(min=0))


def test_same_seed_same_batches_and_only_the_data_stream_moves(tiny_image_folder):
    raw = folder_config(tiny_image_folder, train_transforms=[{"name": "RandomCrop", "size": 32, "padding": 4}, {"name": "RandomHorizontalFlip"}])
    _, first = both_passes(raw)
    _, second = both_passes(raw)
    model_stream = RngStream(123, CPU)
    model_state, global_state = model_stream.state_dict()["cpu"], torch.get_rng_state()
    data_before = first.data_rng.state_dict()["cpu"]
    with model_stream.active():  # a model's stream is the global one around the loop: untouched
        a = epoch_batches(first)
    b = epoch_batches(second)
    assert torch.equal(model_stream.state_dict()["cpu"], model_state) and torch.equal(torch.get_rng_state(), global_state)
    assert not torch.equal(first.data_rng.state_dict()["cpu"], data_before)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    plain, _ = both_passes(folder_config(tiny_image_folder))
    assert any(not torch.equal(xa, xp) for (xa, _), (xp, _) in zip(a, epoch_batches(plain)))  # augmented


def test_pipeline_normalises_like_the_image_pipeline():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    stats_ = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    got = BatchPipeline(stats=stats_)(x)
    want = torch.stack([TF.normalize(TF.to_dtype(i, torch.float32, scale=True), list(stats_[0]), list(stats_[1])) for i in x])
    assert torch.equal(got, want)
    assert BatchPipeline(finish=False)(x) is x  # an adapter that ignored self.transform: as it yields


# ---------------------------------------------------------------- runs


def test_cached_run_equals_the_dataloader_run_without_augmentation(run):
    models = [mlp("a"), mlp("b", dropout=0.0, lr=0.3)]
    plain = run(digits_config(models), "plain")
    cached = run(digits_config(models, cache="memory"), "cached")
    pd.testing.assert_frame_equal(history(cached.run_dir), history(plain.run_dir), check_exact=True)


def test_cached_run_with_augmentation_learns_as_well(run):
    crop = [{"name": "RandomCrop", "size": 8, "padding": 1}]
    adam = {"name": "Adam", "lr": 0.01}
    models = [mlp("a", dropout=0.0, optimizer=adam), mlp("b", dropout=0.0, seed=4, optimizer=adam)]
    plain = run(digits_config(models, epochs=4, train_transforms=crop), "plain")
    cached = run(digits_config(models, epochs=4, train_transforms=crop, cache="memory"), "cached")
    last = [r.history.query("epoch == 4").set_index("model").test_acc for r in (plain, cached)]
    assert not last[0].equals(last[1])  # different draws ...
    # ... same distribution: 450 test images at accuracy ~0.82 -> sd ~0.018 per model, ~0.026
    # for a difference; 0.08 is 3 sd. Without the crop both reach ~0.9; unnormalised or
    # mislabelled batches would not come near.
    assert (last[0] - last[1]).abs().max() < 0.08, (last[0], last[1])
    assert (last[1] > 0.7).all()


def cache_config(tmp_path, **data) -> str:
    raw = digits_config([killable("a"), killable("b", seed=5)], epochs=2, batch_size=100, eval_batch_size=100, cache="memory", **data)
    raw["experiment"] |= {"checkpoint_every_steps": 4, "grad_histograms": False}
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def test_kill_mid_epoch_then_resume_reproduces_the_cached_run(tmp_path):
    config = cache_config(tmp_path, train_transforms=[{"name": "RandomCrop", "size": 8, "padding": 1}])
    whole = launch("run", config, "--out", tmp_path / "whole", "-q")
    assert whole.returncode == 0, whole.stderr
    run_dir = tmp_path / "run"
    killed = launch("run", config, "--out", run_dir, "-q", env={"KILL_AT_STEP": "37"})  # epoch 2, mid-epoch
    assert killed.returncode == -signal.SIGKILL
    resumed = launch("run", config, "--out", run_dir, "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(history(run_dir), history(tmp_path / "whole"), check_exact=True)


def test_disk_cache_is_written_reused_and_keyed_by_content(tiny_image_folder, run, monkeypatch):
    raw = folder_config(tiny_image_folder, cache="memory", disk_cache=True)
    first = run(raw, "first")
    files = list((tiny_image_folder / ".compare-cache").glob("cifar10-*.pt"))
    assert len(files) == 1
    assert set(torch.load(files[0], weights_only=True)) >= {"train_images", "train_labels", "test_images", "test_labels", "classes"}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the disk cache holds the tensors")

    monkeypatch.setattr(datacache, "decode", no_decoding)
    second = run(raw, "second")
    pd.testing.assert_frame_equal(history(second.run_dir), history(first.run_dir), check_exact=True)

    image = tiny_image_folder / "train" / "cat" / "0000.png"
    image.write_bytes((tiny_image_folder / "train" / "dog" / "0000.png").read_bytes())  # a changed file
    with pytest.raises(AssertionError, match="decoded although"):
        run(raw, "third")
    monkeypatch.undo()
    run(raw, "fourth")
    (changed,) = set((tiny_image_folder / ".compare-cache").glob("cifar10-*.pt")) - set(files)  # a new key

    changed.write_bytes(b"not a checkpoint")
    with pytest.warns(CompareWarning, match="unreadable"):
        run(raw, "fifth")  # decoded again, and rewritten
    assert torch.load(changed, weights_only=True)["format"] == datacache.FORMAT


def test_unsupported_transforms_are_config_errors(tiny_image_folder, run):
    raw = folder_config(tiny_image_folder, cache="device", train_transforms=[{"name": "RandomCrop", "size": 32}, {"name": "ColorJitter", "brightness": 0.2}])
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert "data.train_transforms[1]" in str(err.value) and "ColorJitter" in str(err.value)
    raw = folder_config(tiny_image_folder, cache="memory", augment=True)
    raw["data"] |= {"dataset": "imagefolder", "args": {"image_size": 32}}  # default: RandomResizedCrop
    with pytest.raises(ConfigError, match=r"data\.augment.*RandomResizedCrop"):
        run(raw)


def test_cli_run_with_the_memory_cache(tiny_image_folder, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(folder_config(tiny_image_folder, epochs=2, augment=True)))
    proc = compare("run", config, "--out", tmp_path / "run", "-q", "--set", 'data.cache="memory"')
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(frame.epoch) == [1, 2] and (frame.train_samples == 24).all()
    assert tomllib.loads((tmp_path / "run" / "config.toml").read_text())["data"]["cache"] == "memory"


@pytest.mark.realdata
def test_cached_path_trains_like_the_pil_path_on_real_images(cifar_mini, run):
    """Augmented CIFAR-10 (1,000 train, 200 test images), 2 epochs, two small CNNs. At ~30%
    accuracy the 200 test images alone give an sd of ~3.2 points per model, ~4.6 for the
    difference of two runs; the two paths draw different augmentations (training noise on
    top), so the bound is 15 points, over 3 sd. A broken pipeline (unnormalised, mislabelled,
    misaligned crops) falls towards the 10% chance level instead."""
    models = [
        {"name": "lenet", "arch": "lenet", "optimizer": {"name": "Adam", "lr": 1e-3}},
        {"name": "tudui", "arch": "tudui", "optimizer": {"name": "Adam", "lr": 1e-3}},
    ]
    raw = folder_config(cifar_mini, epochs=2, augment=True)
    raw["experiment"]["grad_histograms"] = False
    raw["model"] = models
    raw["data"] |= {"batch_size": 32, "eval_batch_size": 200}
    accs = [run(raw | {"data": raw["data"] | {"cache": c}}, c).history.query("epoch == 2").set_index("model").test_acc for c in ("none", "memory")]
    assert (accs[0] - accs[1]).abs().max() < 0.15, accs
    assert (accs[1] > 0.15).all(), accs


def test_two_processes_cached_equal_two_processes_dataloader(tmp_path):
    """Under torchrun each rank indexes its slice of every global batch from the cache."""
    from tests.run.test_distributed import PLAIN, torchrun, write_config  # noqa: PLC0415

    runs = {}
    for cache in ("none", "memory"):
        config = write_config(tmp_path / f"{cache}.toml", [PLAIN, killable("c", seed=5)])
        text = config.read_text().replace("[data]\n", f'[data]\ncache = "{cache}"\n')
        config.write_text(text)
        proc = torchrun("run", config, "--out", tmp_path / cache, "-q")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[cache] = history(tmp_path / cache)
    pd.testing.assert_frame_equal(runs["memory"], runs["none"], check_exact=True)

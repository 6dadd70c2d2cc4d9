"""The image pipeline of the cached data path, split in two: deterministic steps run once per
image at decode time, the rest runs on whole batches on the training device.

    ToImage -> [Resize / CenterCrop ...]          decode: once per image, cached as uint8
            -> [RandomCrop] -> [RandomHorizontalFlip] -> ToDtype(float32, scale) -> Normalize
                                                   batch: per step, on the device

The batch half draws one crop offset and one flip per *sample* (as the per-image v2 transforms
do), from torch's global CPU generator: the engine makes that the data stream
(`SharedPass.data_rng`) while it asks the loader for a batch, so the same seed gives the same
batches on any device and no model's stream is touched. Crop and flip are gathers over the
zero-padded uint8 batch: no Python loop per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

DECODE_STEPS = (v2.Resize, v2.CenterCrop)  # deterministic: applied once, before caching


class UnsupportedStep(ValueError):
    """A transform the cached path cannot run; `index` is its place in the split's step list."""

    def __init__(self, index: int, step, reason: str):
        super().__init__(reason)
        self.index, self.step, self.reason = index, step, reason


@dataclass(frozen=True)
class Crop:
    size: tuple[int, int]  # (height, width) of the output, pixels
    padding: tuple[int, int, int, int]  # zeros added (left, right, top, bottom) before cropping, pixels
    pad_if_needed: bool = False


@dataclass(frozen=True)
class BatchPipeline:
    """What runs on each cached batch. `finish = False`: the adapter's items are final as it
    yields them (it never called `self.transform`), so the batch is passed on untouched."""

    crop: Crop | None = None
    flip: float = 0.0  # probability of a horizontal flip, per sample
    stats: tuple | None = None  # (mean, std) per channel; None: no normalisation
    finish: bool = True

    @property
    def random(self) -> bool:
        return self.finish and (self.crop is not None or self.flip > 0)

    def output_shape(self, item_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.finish or self.crop is None:
            return tuple(item_shape)
        return (*item_shape[:-2], *self.crop.size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: a batch [B, C, H, W] as cached (uint8, or float for float datasets), on the
        device it is trained on. Draws from the global CPU generator when `random`."""
        if not self.finish:
            return x
        if self.random:
            x = crop_and_flip(x, self.crop, self.flip)
        x = TF.to_dtype(x, torch.float32, scale=True)  # the same ops as the per-image pipeline
        if self.stats is not None:
            x = TF.normalize(x, list(self.stats[0]), list(self.stats[1]))
        return x


def split_steps(steps: list, train: bool) -> tuple[list, BatchPipeline]:
    """A split's configured (or default) transforms -> (decode steps, batch crop/flip).
    Raises UnsupportedStep for a transform the cached path cannot run, or one out of order."""
    decode: list = []
    crop, flip = None, 0.0
    for i, step in enumerate(steps):
        if isinstance(step, DECODE_STEPS):
            if crop is not None or flip:
                raise UnsupportedStep(i, step, f"{type(step).__name__} must come before the random steps (RandomCrop, RandomHorizontalFlip) with data.cache")
            decode.append(step)
        elif isinstance(step, v2.RandomCrop) and train:
            if crop is not None or flip:
                raise UnsupportedStep(i, step, "with data.cache: one RandomCrop, before RandomHorizontalFlip")
            if step.padding_mode != "constant" or step.fill not in (0, None):
                raise UnsupportedStep(i, step, f"with data.cache: RandomCrop pads with zeros only (padding_mode = constant, fill = 0), got padding_mode = {step.padding_mode!r}, fill = {step.fill!r}")
            left, right, top, bottom = step.padding or (0, 0, 0, 0)
            crop = Crop(tuple(step.size), (left, right, top, bottom), step.pad_if_needed)
        elif isinstance(step, v2.RandomHorizontalFlip) and train:
            if flip:
                raise UnsupportedStep(i, step, "with data.cache: one RandomHorizontalFlip")
            flip = float(step.p)
        else:
            name = type(step).__name__
            where = "" if train else " (evaluation is not augmented with data.cache)"
            raise UnsupportedStep(i, step, f"data.cache runs Resize and CenterCrop once per image, then RandomCrop (zero padding) and RandomHorizontalFlip on the device; {name} is not one of them{where}; set data.cache = \"none\" for it")
    return decode, BatchPipeline(crop=crop, flip=flip)


def crop_and_flip(x: torch.Tensor, crop: Crop | None, flip: float) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch and per-sample horizontal flip, as two
    gathers. Offsets and flips are drawn on the CPU (global generator), then moved to x's device."""
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    left, right, top, bottom = crop.padding if crop else (0, 0, 0, 0)
    out_h, out_w = crop.size if crop else (height, width)
    if crop is not None and crop.pad_if_needed:  # as v2.RandomCrop: pad both sides by the shortfall
        grow_h, grow_w = max(0, out_h - (height + top + bottom)), max(0, out_w - (width + left + right))
        top, bottom, left, right = top + grow_h, bottom + grow_h, left + grow_w, right + grow_w
    padded_h, padded_w = height + top + bottom, width + left + right
    if padded_h < out_h or padded_w < out_w:
        raise ValueError(f"Required crop size {(out_h, out_w)} is larger than padded input image size {(padded_h, padded_w)}.")
    rows0 = torch.randint(0, padded_h - out_h + 1, (n,))
    cols0 = torch.randint(0, padded_w - out_w + 1, (n,))
    flipped = torch.rand(n) < flip
    device = x.device
    rows0, cols0, flipped = (t.to(device, non_blocking=True) for t in (rows0, cols0, flipped))
    if any((left, right, top, bottom)):
        x = F.pad(x, (left, right, top, bottom))  # zeros, in the cached dtype (uint8: before scaling, as v2 does)
    across = torch.arange(out_w, device=device)
    rows = rows0[:, None] + torch.arange(out_h, device=device)  # [n, out_h]
    cols = cols0[:, None] + torch.where(flipped[:, None], out_w - 1 - across, across)  # [n, out_w]; a flip reads the crop backwards
    channels = x.shape[1]
    # Two gathers (rows, then columns): on the CPU about twice as fast as one advanced index.
    x = torch.gather(x, 2, rows[:, None, :, None].expand(n, channels, out_h, x.shape[-1]))
    return torch.gather(x, 3, cols[:, None, None, :].expand(n, channels, out_h, out_w))

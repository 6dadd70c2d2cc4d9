"""Dense targets (segmentation, token labels): what evaluation keeps per sample, and the metrics.

A dense task's target is one class per pixel (`[H, W]`) or token (`[L]`), its prediction one
score per class per pixel (`[C, H, W]`, `[C, L]`). Evaluation keeps, per sample and class,
three counts over the counted pixels (those whose target is not `ignore_index`): the pixels
where truth and prediction are that class (`inter`), the truth's (`true_px`) and the
prediction's (`pred_px`). 3 x 4 bytes per class per image, whatever the image size; the union
is true_px + pred_px - inter. Summed over any set of images they give that set's confusion
matrix's diagonal, row and column sums: every metric below, for the test set or for any
bootstrap resample of its images, as torchvision's references/segmentation/utils.py
(ConfusionMatrix) computes it from the whole matrix.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

STATS = ("inter", "true_px", "pred_px")  # per sample, per class: [n, C] each
SHOWN = 4  # the first test images whose whole predicted mask is kept, for the report's picture


def top1(pred: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 (the first class on ties), as int64. torch's argmax and max().indices
    over a strided dim are 4x (C = 4) to 2x (C = 21) slower on a CPU than these two fast
    reductions; evaluation pays this once per batch and model (docs/metrics.md)."""
    c = pred.shape[1]
    best = pred.amax(dim=1, keepdim=True)
    rank = torch.arange(c - 1, -1, -1, dtype=torch.int16 if c < 2**15 else torch.int32, device=pred.device)
    return (c - 1) - ((pred == best) * rank.view(1, c, *[1] * (pred.ndim - 2))).amax(dim=1).long()


def dense_stats(pred: torch.Tensor, y: torch.Tensor, classes: int, ignore_index: int | None) -> dict[str, torch.Tensor]:
    """One batch's per-sample, per-class counts, on the prediction's device (no host sync:
    scatter_add, not bincount, whose output size needs the largest label)."""
    guess = top1(pred.detach()).flatten(1)  # [B, P]
    truth = y.flatten(1).long()
    counted = (truth != ignore_index if ignore_index is not None else torch.ones_like(truth, dtype=torch.bool)).to(torch.int32)
    truth = truth * counted  # an ignored pixel's label (255) indexes class 0 with weight 0
    hit = counted * (guess == truth)

    def per_class(index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(truth), classes, dtype=torch.int32, device=pred.device).scatter_add_(1, index, weight)

    # `target`: a placeholder for the mask evaluation would otherwise keep on the device per image
    # (H x W int64: 8 MB a 1024x1024 image); the report reads the test masks from the run's files
    placeholder = torch.zeros(len(truth), dtype=torch.uint8, device=pred.device)
    return {"inter": per_class(truth, hit), "true_px": per_class(truth, counted), "pred_px": per_class(guess, counted), "target": placeholder}


def shown(pred: torch.Tensor, x=None) -> dict[str, torch.Tensor]:
    """The first SHOWN samples' predicted masks (uint8 where the classes fit), and their
    inputs where they are image-like: what the report's prediction picture draws."""
    mask = top1(pred.detach()[:SHOWN])
    out = {"shown_mask": mask.to(torch.uint8) if pred.shape[1] <= 256 else mask.to(torch.int32)}
    if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in (1, 3) and x.is_floating_point():
        out["shown_input"] = x[:SHOWN].detach().to(torch.float16)
    return out


# ------------------------------------------------------------ aggregation (numpy, any weights)

def features(k) -> np.ndarray:
    """[n, 3C]: inter, true_px, pred_px per sample; a row of weights sums them."""
    return np.concatenate([k.stats["inter"], k.stats["true_px"], k.stats["pred_px"]], axis=1).astype(np.float64)


def _parts(s: np.ndarray):
    c = s.shape[1] // 3
    return s[:, :c], s[:, c : 2 * c], s[:, 2 * c :]


def _nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no class at all: NaN
        return np.nanmean(a, axis=1)


def class_iou(s: np.ndarray) -> np.ndarray:
    """[B, C]: intersection over union per class; NaN where a class is in neither truth nor prediction."""
    inter, true, pred = _parts(s)
    with np.errstate(all="ignore"):
        return inter / (true + pred - inter)


def pixel_acc(s, k=None):
    inter, true, _ = _parts(s)
    with np.errstate(all="ignore"):
        return inter.sum(axis=1) / true.sum(axis=1)


def mean_acc(s, k=None):
    inter, true, _ = _parts(s)
    with np.errstate(all="ignore"):
        return _nanmean(inter / true)  # recall over the classes in the truth


def miou(s, k=None):
    return _nanmean(class_iou(s))


def dice(s, k=None):
    inter, true, pred = _parts(s)
    with np.errstate(all="ignore"):
        return _nanmean(2 * inter / (true + pred))


def image_acc(k) -> np.ndarray:
    """Each image's pixel accuracy (0 where it has no counted pixel: no evidence either way),
    the per-sample values pixel_acc's sign-flip test pairs."""
    correct, counted = k.stats["inter"].sum(axis=1).astype(np.float64), k.stats["true_px"].sum(axis=1).astype(np.float64)
    return np.divide(correct, counted, out=np.zeros_like(correct), where=counted > 0)


def per_class_iou(k) -> np.ndarray:
    """[C]: each class's IoU over the whole test set (NaN where it is in neither truth nor prediction)."""
    return class_iou(features(k).sum(axis=0, keepdims=True))[0]

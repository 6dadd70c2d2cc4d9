"""Dense (segmentation) statistics and metrics: the per-image counts evaluation keeps against a
hand-computed confusion matrix and torchvision's reference formulas
(references/segmentation/utils.py, ConfusionMatrix: torch.bincount over the pixels), ignore_index,
and the A/A simulation of the dense paired tests (as tests/metrics/test_paired.py does for the
other families): at alpha = 0.05 at most 5 % rejections, plus 3 binomial standard errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compare.metrics import dense, significance
from compare.metrics.builtin import Kept, metrics_for
from compare.metrics.tasks import Task, infer_task, sample_stats

DENSE = metrics_for("dense", 3)
ALPHA, RESAMPLES = 0.05, 999


def _kept(stats: dict[str, torch.Tensor], classes: int) -> Kept:
    n = len(next(iter(stats.values())))
    return Kept({k: v.numpy() for k, v in stats.items()}, np.zeros(n), classes)


def _logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[B, C, ...] logits whose argmax is `labels`."""
    return torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


def _torchvision(truth: torch.Tensor, pred: torch.Tensor, n: int) -> dict[str, float]:
    a, b = truth.flatten(), pred.flatten()
    k = (a >= 0) & (a < n)
    h = torch.bincount(n * a[k].long() + b[k], minlength=n**2).reshape(n, n).double()
    diag = torch.diag(h)
    iu = diag / (h.sum(1) + h.sum(0) - diag)
    return {"pixel_acc": float(diag.sum() / h.sum()), "mean_acc": float(np.nanmean((diag / h.sum(1)).numpy())),
            "miou": float(np.nanmean(iu.numpy())), "dice": float(np.nanmean((2 * diag / (h.sum(1) + h.sum(0))).numpy()))}


def test_infer_task_and_its_description():
    task = infer_task(torch.zeros(8, 6, dtype=torch.long), (5, 8, 6), torch.nn.CrossEntropyLoss(ignore_index=255))
    assert (task.kind, task.width, task.extent, task.ignore_index) == ("dense", 5, (8, 6), 255)
    assert task.describe() == "dense classification (segmentation, 5 classes, 8x6, ignore_index 255)"
    tokens = infer_task(torch.zeros(20, dtype=torch.long), (7, 20), torch.nn.CrossEntropyLoss())
    assert tokens.describe() == "dense classification (token labels, 7 classes, 20)"
    assert tokens.bytes_per_sample() == 3 * 4 * 7


def test_hand_computed_confusion_matrix():
    """Two 2x3 images, 3 classes. Image 0: truth [[0,0,1],[1,2,2]], prediction [[0,1,1],[1,2,0]];
    image 1: truth all 0, prediction all 0. Confusion (rows truth, columns prediction), both
    images: [[7, 1, 0], [0, 2, 0], [1, 0, 1]]."""
    truth = torch.tensor([[[0, 0, 1], [1, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    guess = torch.tensor([[[0, 1, 1], [1, 2, 0]], [[0, 0, 0], [0, 0, 0]]])
    stats = sample_stats(Task("dense", 3, extent=(2, 3)), _logits(guess, 3), truth)
    assert stats["inter"].tolist() == [[1, 2, 1], [6, 0, 0]]
    assert stats["true_px"].tolist() == [[2, 2, 2], [6, 0, 0]]
    assert stats["pred_px"].tolist() == [[2, 3, 1], [6, 0, 0]]
    kept = _kept(stats, 3)
    iou = [7 / 9, 2 / 3, 1 / 2]  # diag / (row + column - diag)
    assert DENSE["pixel_acc"].value(kept) == pytest.approx(10 / 12)
    assert DENSE["mean_acc"].value(kept) == pytest.approx((7 / 8 + 2 / 2 + 1 / 2) / 3)
    assert DENSE["miou"].value(kept) == pytest.approx(np.mean(iou))
    assert DENSE["dice"].value(kept) == pytest.approx(np.mean([14 / 16, 4 / 5, 2 / 3]))
    for name, value in _torchvision(truth, guess, 3).items():
        assert DENSE[name].value(kept) == pytest.approx(value)


def test_random_masks_against_torchvision():
    g = torch.Generator().manual_seed(0)
    truth, guess = torch.randint(0, 5, (20, 9, 7), generator=g), torch.randint(0, 5, (20, 9, 7), generator=g)
    guess[truth == 2] = 3  # class 2 never predicted, class 4 absent from the truth in half the images
    truth[:10][truth[:10] == 4] = 0
    kept = _kept(sample_stats(Task("dense", 5, extent=(9, 7)), _logits(guess, 5) + torch.randn(20, 5, 9, 7, generator=g) * 0.01, truth), 5)
    logits_guess = (_logits(guess, 5) + torch.randn(20, 5, 9, 7, generator=torch.Generator().manual_seed(0)) * 0.01).argmax(1)
    for name, value in _torchvision(truth, logits_guess, 5).items():
        assert DENSE[name].value(kept) == pytest.approx(value, abs=1e-12), name


def test_top1_is_argmax_first_on_ties():
    g = torch.Generator().manual_seed(2)
    logits = torch.randint(0, 3, (5, 6, 7, 4), generator=g).float()  # many ties
    assert torch.equal(dense.top1(logits), logits.argmax(1))
    assert torch.equal(dense.top1(logits[..., 0]), logits[..., 0].argmax(1))  # token labels: [B, C, L]


def test_class_absent_from_truth_and_prediction_is_left_out():
    truth = torch.tensor([[0, 0, 1, 1]])
    stats = sample_stats(Task("dense", 4, extent=(4,)), _logits(truth, 4), truth)  # classes 2, 3: nowhere
    assert DENSE["miou"].value(_kept(stats, 4)) == 1.0 and DENSE["dice"].value(_kept(stats, 4)) == 1.0


def test_ignore_index_changes_nothing():
    """Pixels labelled 255 count nowhere, whatever is predicted there: the statistics equal
    those of the same images with those pixels cut out."""
    g = torch.Generator().manual_seed(1)
    truth = torch.randint(0, 3, (6, 8, 8), generator=g)
    logits = torch.randn(6, 3, 8, 8, generator=g)
    task = Task("dense", 3, extent=(8, 8), ignore_index=255)
    ignored = truth.clone()
    ignored[:, :, :2] = 255
    other = logits.clone()
    other[:, :, :, :2] = torch.randn(6, 3, 8, 2, generator=g)  # different predictions on the ignored pixels
    cut = sample_stats(Task("dense", 3, extent=(8, 6)), logits[:, :, :, 2:], truth[:, :, 2:])
    for scores in (logits, other):
        stats = sample_stats(task, scores, ignored)
        for name in ("inter", "true_px", "pred_px"):
            assert torch.equal(stats[name], cut[name])
    assert int(cut["true_px"].sum()) == 6 * 8 * 6


# ---------------------------------------------------------------- A/A of the dense paired tests


def _segmenter(rng, truth: np.ndarray, p_right: np.ndarray, classes: int) -> Kept:
    """Each pixel right with its image's probability p_right, else another class at random;
    the per-image counts evaluation keeps, from those pixels."""
    n, pixels = truth.shape
    right = rng.random(truth.shape) < p_right[:, None]
    guess = np.where(right, truth, (truth + rng.integers(1, classes, size=truth.shape)) % classes)
    stats = sample_stats(Task("dense", classes, extent=(pixels,)), _logits(torch.from_numpy(guess), classes), torch.from_numpy(truth))
    return _kept(stats, classes)


def _scenes(rng, n: int, pixels: int, classes: int) -> np.ndarray:
    """Images whose class shares differ (a background-heavy scene, a crowded one)."""
    shares = rng.dirichlet(np.full(classes, 0.7), size=n)
    return np.stack([rng.choice(classes, size=pixels, p=s) for s in shares])


def test_aa_dense_paired_tests():
    """Two segmenters from the same noise model (each image's difficulty shared, as images are
    hard for both): pixel_acc's sign-flip test on per-image accuracy, and the paired bootstrap
    of miou and dice on shared image resamples, reject at most alpha + 3 SE of the time."""
    rng = np.random.default_rng(700)
    repeats, n, pixels, classes = 1000, 60, 64, 3
    rejected = {"pixel_acc": 0, "miou": 0, "dice": 0}
    for _ in range(repeats):
        truth = _scenes(rng, n, pixels, classes)
        difficulty = rng.beta(5, 2, size=n)
        a, b = _segmenter(rng, truth, difficulty, classes), _segmenter(rng, truth, difficulty, classes)
        pix = DENSE["pixel_acc"]
        rejected["pixel_acc"] += significance.sign_flip_p(pix.paired(a) - pix.paired(b), resamples=RESAMPLES) < ALPHA
        for name in ("miou", "dice"):
            metric = DENSE[name]
            values = significance.bootstrap([metric.resampler(a), metric.resampler(b)], n, resamples=RESAMPLES)
            rejected[name] += significance.bootstrap_p(metric.value(a) - metric.value(b), values[0] - values[1]) < ALPHA
    ceiling = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / repeats)
    rates = {k: v / repeats for k, v in rejected.items()}
    print(f"\nA/A dense, n={n} images of {pixels} pixels, {repeats} repeats: rejection rates {rates} (ceiling {ceiling:.3f})")
    assert all(rate <= ceiling for rate in rates.values()), rates

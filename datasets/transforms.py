"""torchvision.transforms.v2 pipelines for the built-in datasets."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def image_pipeline(stats, augment: list | None = None, resize: list | None = None) -> v2.Compose:
    """PIL image -> resize -> augmentation -> float tensor in [0, 1] -> normalised."""
    mean, std = stats
    return v2.Compose([
        v2.ToImage(),
        *(resize or []),
        *(augment or []),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def crop_flip(size: int, padding: int = 4, flip: bool = True) -> list:
    """Random crop with zero padding (+ horizontal flip): the standard CIFAR augmentation."""
    return [v2.RandomCrop(size, padding=padding)] + ([v2.RandomHorizontalFlip()] if flip else [])

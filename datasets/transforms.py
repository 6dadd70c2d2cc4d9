"""torchvision.transforms.v2 pipelines: the built-in datasets' defaults and `[data]
train_transforms` / `eval_transforms` built by name."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# Steps every pipeline gets from image_pipeline (so a config list must not repeat them), and
# transforms that take other transforms or Python callables (not expressible in TOML).
ADDED_BY_PIPELINE = {"ToImage", "ToDtype", "ToPureTensor", "Normalize", "ToTensor", "PILToTensor"}
_NOT_FROM_TOML = {"Transform", "Compose", "RandomApply", "RandomChoice", "RandomOrder", "Lambda", "LinearTransformation"}
# For boxes, key points or video, or returning a tuple of crops / a PIL image: nothing an image
# classification pipeline (ToImage, your steps, ToDtype, Normalize) can use.
NOT_FOR_CLASSIFICATION = {
    "ClampBoundingBoxes", "ConvertBoundingBoxFormat", "SanitizeBoundingBoxes", "ClampKeyPoints", "SanitizeKeyPoints",
    "SetClampingMode", "RandomIoUCrop", "UniformTemporalSubsample", "FiveCrop", "TenCrop", "ToPILImage",
}


def image_pipeline(stats, augment: list | None = None, resize: list | None = None) -> v2.Compose:
    """PIL image / array / tensor -> resize -> augmentation -> float tensor in [0, 1] ->
    normalised with `stats` = (mean, std) per channel (None: not normalised)."""
    steps = [v2.ToImage(), *(resize or []), *(augment or []), v2.ToDtype(torch.float32, scale=True)]
    if stats is not None:
        steps.append(v2.Normalize(*stats))
    return v2.Compose(steps)


def list_transforms() -> list[str]:
    """torchvision.transforms.v2 classes a config can name (`{ name = "RandomCrop", size = 32 }`)."""
    return sorted(
        n
        for n in dir(v2)
        if isinstance(getattr(v2, n), type)
        and issubclass(getattr(v2, n), v2.Transform)
        and n not in _NOT_FROM_TOML | ADDED_BY_PIPELINE | NOT_FOR_CLASSIFICATION
    )


def create_transform(name: str, args: dict) -> v2.Transform:
    return getattr(v2, name)(**args)


def crop_flip(size: int, padding: int = 4, flip: bool = True) -> list:
    """Random crop with zero padding (+ horizontal flip): the standard CIFAR augmentation."""
    return [v2.RandomCrop(size, padding=padding)] + ([v2.RandomHorizontalFlip()] if flip else [])

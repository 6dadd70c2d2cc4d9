"""Model registry (timm style): `register_model`, `create_model`, `list_models`.

A builder takes the dataset's `input_shape` (C, H, W) and `num_classes`, then its own keyword
arguments, and returns an `nn.Module` mapping a batch of images to class logits.
"""
from __future__ import annotations

from torch import nn

from compare.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int, **args) -> nn.Module:
    return MODELS.get(name)(input_shape=tuple(input_shape), num_classes=num_classes, **args)


def list_models() -> list[str]:
    return MODELS.names()


# Importing the modules registers their builders.
from compare.models import lenet, mlp, resnet, torchvision_models, tudui  # noqa: E402,F401

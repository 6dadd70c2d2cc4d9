"""Every torchvision classification builder, as `torchvision.<name>` (e.g. torchvision.resnet18).

Keyword arguments go to the builder (`weights = "DEFAULT"` downloads pretrained weights where
online); `num_classes` comes from the dataset.
"""
from __future__ import annotations

import functools

from compare.models import MODELS
from compare.errors import CompareError

PREFIX = "torchvision."


@functools.cache
def _names() -> list[str]:
    import torchvision  # noqa: PLC0415 - torchvision import is slow; only when asked

    return [PREFIX + n for n in torchvision.models.list_models(module=torchvision.models)]


def _resolve(name: str):
    if not name.startswith(PREFIX) or name not in _names():
        return None
    builder_name = name[len(PREFIX) :]

    def build(input_shape, num_classes, **kwargs):
        import torchvision  # noqa: PLC0415

        if input_shape[0] != 3:
            raise CompareError(f"{name} expects 3-channel images; this dataset has {input_shape[0]} channel(s)")
        if kwargs.get("weights") is not None:
            # Pretrained heads have 1000 classes: build with them, then replace the head.
            return _with_new_head(torchvision.models.get_model(builder_name, **kwargs), num_classes)
        return torchvision.models.get_model(builder_name, num_classes=num_classes, **kwargs)

    build.__name__ = builder_name
    return build


def _with_new_head(model, num_classes: int):
    from torch import nn  # noqa: PLC0415

    for attr in ("fc", "head", "heads", "classifier"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return model
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return model
    raise CompareError(f"cannot find the classification head of {type(model).__name__} to resize to {num_classes} classes")


MODELS.add_resolver(_resolve, _names)

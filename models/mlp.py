"""A multilayer perceptron over flattened pixels."""
from __future__ import annotations

import math

from torch import nn

from compare.models import register_model


@register_model("mlp")
def mlp(input_shape, num_classes, hidden: list[int] = (256, 128), dropout: float = 0.0):
    """`hidden`: widths of the hidden layers; `dropout`: probability after each hidden layer."""
    bad = [h for h in hidden if not isinstance(h, int) or h < 1]
    if bad:  # torch would fail with a RuntimeError deep in nn.Linear; this is the config's mistake
        raise ValueError(f"hidden widths must be integers >= 1, got {bad[0]!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)

"""A multilayer perceptron over flattened pixels."""
from __future__ import annotations

import math

from torch import nn

from models import register_model


@register_model("mlp")
def mlp(input_shape, num_classes, hidden: list[int] = (256, 128), dropout: float = 0.0):
    """`hidden`: widths of the hidden layers; `dropout`: probability after each hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)

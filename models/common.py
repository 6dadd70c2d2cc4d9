"""Shape helpers shared by the built-in architectures."""
from __future__ import annotations

import torch
from torch import nn


def flat_features(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Size of `features(x)` flattened, for one sample of `input_shape` (no RNG is consumed)."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).flatten(1).shape[1]

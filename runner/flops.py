"""Forward FLOPs per sample, counted by torch.utils.flop_counter (matmuls and convolutions)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """One zero sample through the model in eval mode (BatchNorm needs no batch statistics,
    dropout draws nothing), then the train/eval flags are put back."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for module, training in modes.items():
            module.training = training
    return int(counter.get_total_flops())

"""One probing forward pass per model: FLOPs per sample (torch.utils.flop_counter counts
matmuls and convolutions) and the output shape, checked against the dataset's labels."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def probe_forward(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> tuple[int, tuple[int, ...]]:
    """One zero sample through the model in eval mode (BatchNorm needs no batch statistics,
    dropout draws nothing), then the train/eval flags are put back. Returns (forward FLOPs
    per sample, output shape of one sample)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(torch.zeros(1, *input_shape, device=device))
    finally:
        for module, training in modes.items():
            module.training = training
    shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
    return int(counter.get_total_flops()), shape

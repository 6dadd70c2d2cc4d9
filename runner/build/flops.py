"""One probing forward pass per model: FLOPs per sample (torch.utils.flop_counter counts
matmuls and convolutions) and the output shape, checked against the dataset's labels."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from runner.metrics.outputs import shape_of


def probe_forward(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, output_key: str | None = None) -> tuple[int | None, tuple[int, ...]]:
    """One zero sample through the model in eval mode (BatchNorm needs no batch statistics,
    dropout draws nothing), then the train/eval flags are put back. Returns (forward FLOPs
    per sample, output shape of one sample)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    sample = torch.zeros(1, *input_shape, device=device)
    try:
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                out = model(sample)
            flops = int(counter.get_total_flops())
        except Exception:  # noqa: BLE001 - the counter's own limits never refuse a model: FLOPs unknown
            with torch.no_grad():
                out = model(sample)
            flops = None
    finally:
        for module, training in modes.items():
            module.training = training
    return flops, shape_of(out, output_key)[1:]

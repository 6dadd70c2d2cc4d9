"""How a model computes, chosen in `[experiment]`: precision (autocast, fp16 loss scaling),
memory layout (channels_last) and torch.compile. The defaults change nothing: fp32, the
model's own layout, eager.

Logits come out of autocast in reduced precision; the shared loss is applied to them in fp32
(`logits.float()`), as hand-written mixed-precision loops do, so every model's loss, metrics
and health check are computed the same way whatever its precision.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from compare.config.schema import PRECISIONS

from compare.errors import CompareWarning

DTYPES = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16)))  # precision name (runner/config/schema.py) -> autocast dtype
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile(mode=...)


@dataclass(frozen=True)
class Numerics:
    precision: str = "32"  # a key of DTYPES
    channels_last: bool = False

    @property
    def plain(self) -> bool:
        """fp32 in the model's own layout: the forward needs no autocast and no layout change."""
        return self.precision == "32" and not self.channels_last

    def autocast(self, device: torch.device):
        dtype = DTYPES[self.precision]
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (N, C, H, W) in the models' memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def for_model(self, model: nn.Module, device: torch.device, name: str) -> "Numerics":
        """These numerics, less channels_last where it is known to be wrong for this model."""
        if self.precision == "bf16-mixed" and device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(CompareWarning(
                f"experiment.precision = \"bf16-mixed\": this CPU ({torch.backends.cpu.get_cpu_capability()}) has no AVX-512 BF16 "
                "or AMX, so bf16 runs emulated and slower than fp32"), stacklevel=2)
        if not (self.channels_last and device.type == "cpu"):
            return self
        # oneDNN's nhwc weight gradient of a strided 1x1 convolution with fewer input channels
        # than its channel block is wrong, or hangs (oneDNN issue #6035; seen here with torch
        # 2.14 for 3 and 4 input channels, fp32). ResNet shortcuts of narrow models are such convs.
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride != (1, 1) and layer.in_channels < 16:
                warnings.warn(CompareWarning(
                    f"model {name}: channels_last left off on the CPU: it has a strided 1x1 convolution with "
                    f"{layer.in_channels} input channels, whose oneDNN channels_last gradient is wrong (oneDNN issue #6035)"), stacklevel=2)
                return replace(self, channels_last=False)
        return self

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling: one scaler per model (its own scale)."""
        return torch.amp.GradScaler(device.type) if self.precision == "16-mixed" else None


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class CompiledForward:
    """`torch.compile(model, mode=mode)`, falling back to the eager model, with one warning, when
    compilation fails (compilation happens at the first call, so failures surface there).
    A model whose eager forward also raises has a bug of its own: that error propagates.
    `experiment.compile = true` is mode "default"; "reduce-overhead" replays CUDA graphs on CUDA
    (launch-bound tiny models) and is plain inductor code on the CPU."""

    def __init__(self, model: nn.Module, name: str, mode: str = "default"):
        self.model, self.name, self.mode = model, name, mode
        self.compiled = torch.compile(model) if mode == "default" else torch.compile(model, mode=mode)

    def __call__(self, *args, **kwargs):  # model(x), or model(**x) for a dict input it asks for by key
        if self.compiled is None:
            return self.model(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a compiler failure: train it eagerly
            out = self.model(*args, **kwargs)  # raises where the model itself is broken: that is its error, not the compiler's
            self.compiled = None
            first = (str(err).strip().splitlines() or [""])[0][:200]
            warnings.warn(CompareWarning(f"model {self.name}: torch.compile failed ({type(err).__name__}: {first}); training it uncompiled"), stacklevel=2)
            return out

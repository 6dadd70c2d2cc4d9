"""The peak FLOP/s a device can reach in a dtype: the denominator of MFU in `compare bench`.

CUDA: NVIDIA's datasheet figure for the card, dense (the starred datasheet numbers assume 2:4
sparsity and are halved here); a card not in the table is measured like a CPU. CPU: there is
no datasheet number for "this machine, these threads, this build of torch", so the peak is
measured: the best of a few large square matmuls in the dtype (fp32 or bf16). MFU against a
measured matmul says how close training gets to the fastest dense kernel the machine runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from compare.engine.numerics import DTYPES as AUTOCAST_DTYPES
from compare.engine.timing import wall_seconds

# Dense tensor-core/FP32 TFLOP/s from NVIDIA datasheets. First match on
# torch.cuda.get_device_name() wins, so the more specific names come first.
DATASHEET_TFLOPS: list[tuple[str, str, dict[str, float]]] = [
    (r"H100.*PCIe", "H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"H100.*NVL", "H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H100", "H100 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"H200.*NVL", "H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H200", "H200 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"A100", "A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"L40S", "L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    (r"\bL4\b", "L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"\bA10\b", "A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    (r"V100.*PCIE", "V100 PCIe", {"fp32": 14.0, "fp16": 112.0}),
    (r"V100", "V100 SXM2", {"fp32": 15.7, "fp16": 125.0}),
]
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Peak:
    flops_per_s: float
    dtype: str  # fp32 | tf32 | bf16 | fp16
    source: str  # how it was obtained, printed under the bench table


def precision_dtype(precision: str, device: torch.device) -> str:
    """The dtype an `experiment.precision` computes in. fp32 on CUDA: cuDNN runs convolutions
    on TF32 tensor cores unless told not to (torch's default), so CNNs are held to that peak."""
    reduced = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(AUTOCAST_DTYPES[precision])
    if reduced:
        return reduced
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def datasheet_peak(device_name: str, dtype: str) -> tuple[str, float] | None:
    """(the card as the datasheet names it, dense FLOP/s), or None for a card or dtype not listed."""
    for pattern, card, tflops in DATASHEET_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return (card, tflops[dtype] * 1e12) if dtype in tflops else None
    return None


def device_peak(device: torch.device, dtype: str) -> Peak:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        listed = datasheet_peak(name, dtype)
        if listed is not None:
            return Peak(listed[1], dtype, f"{dtype} {listed[1] / 1e12:g} TFLOP/s dense, NVIDIA datasheet for {listed[0]} ({name})")
    return measured_peak(device, dtype)


def measured_peak(device: torch.device, dtype: str, min_seconds: float = 0.2, max_side: int = 8192, repeats: int = 3) -> Peak:
    """Best of `repeats` square matmuls, the side doubled from 256 until one takes `min_seconds`
    (a slow dtype, such as bf16 on a CPU without bf16 instructions, stays small and quick)."""
    torch_dtype = DTYPES[dtype]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        with torch.no_grad():
            side = 256
            while True:
                a = torch.randn(side, side, device=device).to(torch_dtype)
                b = torch.randn(side, side, device=device).to(torch_dtype)
                seconds = wall_seconds(lambda: a @ b, device)  # also the warmup of this size
                if seconds >= min_seconds or side >= max_side:
                    break
                side *= 2
            best = min([seconds] + [wall_seconds(lambda: a @ b, device) for _ in range(repeats - 1)])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    flops = 2 * side**3 / best
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"this CPU, {torch.get_num_threads()} threads"
    return Peak(flops, dtype, f"{dtype} {flops / 1e9:.1f} GFLOP/s measured: {side}x{side} {dtype} matmul, best of {repeats}, {where}")


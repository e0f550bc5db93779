"""The device's dense matmul peak, measured in the bench run whose speeds it divides.

A vendor's datasheet peak is not what this device, at its clocks and power limit, with this
PyTorch and BLAS, reaches; the MFU denominators here are measured: square matmuls of random
matrices (random, not zeros: on GPUs the power drawn, and so the clocks, depend on the bits),
timed in rounds after a warm-up, the fastest round kept (load from other jobs and a GPU's
clock ramp only slow a round down, so the fastest is the best estimate of what it can do).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from trainrepro.engine.build import cpu_has_native_bf16

PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_SIZE = {"cuda": 8192, "cpu": 2048}  # ~1 ms per bf16 matmul on an H200; ~0.1 s on a CPU


def peak_precision(precision: str, device: torch.device) -> str:
    """The matmul precision a training precision's convolutions run in, i.e. which peak its MFU
    divides by: bf16 under bf16 autocast; fp32 on CUDA runs convolutions in TF32 when cuDNN is
    allowed to (PyTorch's default), so its peak is TF32's; fp32 elsewhere."""
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return precision


def measurable(precision: str, device: torch.device) -> bool:
    """Whether this device has ``precision`` matmul units: TF32 is CUDA's alone; bf16 on a CPU
    needs AVX512-BF16 or AMX (else it is emulated, slower than fp32: no peak to speak of)."""
    if precision == "tf32":
        return device.type == "cuda"
    if precision == "bf16":
        return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return precision == "fp32"


@contextlib.contextmanager
def _fp32_matmuls_as(precision: str, device: torch.device) -> Iterator[None]:
    """fp32 matmuls on CUDA in TF32 for "tf32", in full fp32 otherwise; restored after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(
    device: torch.device, precision: str, size: int, *, seconds: float = 0.5, rounds: int = 3
) -> float:
    """TFLOP/s (2 * size^3 FLOPs per matmul) of ``size`` x ``size`` matmuls in ``precision``:
    the fastest of ``rounds`` rounds of about ``seconds / rounds`` each (at least one matmul),
    after two untimed matmuls (cuBLAS / oneDNN set-up)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: must be one of {', '.join(PRECISIONS)}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (
        torch.randn(size, size, device=device, dtype=dtype, generator=generator) for _ in range(2)
    )
    out = torch.empty_like(a)  # written in place: no allocation is timed
    with _fp32_matmuls_as(precision, device):
        torch.mm(a, b, out=out)
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        per_round = max(1, round(seconds / rounds / (time.perf_counter() - start)))
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(per_round):
                torch.mm(a, b, out=out)
            _sync(device)
            best = min(best, (time.perf_counter() - start) / per_round)
    return 2 * size**3 / best / 1e12


def measure_peaks(
    device: torch.device, precisions: list[str], size: int, *, seconds: float = 0.5
) -> dict[str, float]:
    """``matmul_tflops`` of each of ``precisions`` this device has units for (others left out,
    so their MFU is None)."""
    return {
        p: matmul_tflops(device, p, size, seconds=seconds)
        for p in dict.fromkeys(precisions)
        if measurable(p, device)
    }

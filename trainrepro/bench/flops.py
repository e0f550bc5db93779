"""FLOPs of one training update, counted, and the model FLOPs utilisation (MFU) they give.

MFU = achieved FLOP/s / the device's dense matmul peak of the same precision, measured in
the same run (trainrepro.bench.peak). The FLOPs are those of the model's matrix products and
convolutions only, as MFU conventions count them: norm layers, activations, the loss and the
optimizer step are left out, so MFU is what the update gets out of the device's matmul units.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def train_step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward of ``model`` on (x, y), counted by FlopCounterMode
    (matrix products and convolutions only; the optimizer step's FLOPs are ignored), on a copy
    so the model's gradients are left alone.

    Backward is counted as it runs, not as "2x forward": a layer whose input needs no gradient
    (the first one) computes only its weight gradient."""
    model = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def count_update_flops(
    model: torch.nn.Module,
    batch_size: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    channels_last: bool = False,
) -> int:
    """``train_step_flops`` of a batch of ``batch_size`` images of ``image_shape`` (C, H, W),
    on the meta device: the counter needs shapes only, so counting costs no real update (one
    WRN-16-4 update at batch 128 is seconds on a CPU)."""
    model = copy.deepcopy(model).to("meta")
    x = torch.empty(batch_size, *image_shape, device="meta")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch_size, dtype=torch.long, device="meta")
    return train_step_flops(model, x, y)


def mfu(achieved_tflop_per_s: float, peak_tflop_per_s: float | None) -> float | None:
    """Model FLOPs utilisation: the fraction of the peak achieved; None without a peak."""
    if not peak_tflop_per_s:
        return None
    return achieved_tflop_per_s / peak_tflop_per_s


def utilisation(
    images_per_s: float,
    gflop_per_image: float,
    precision: str,
    peaks: dict[str, float],
    prefix: str = "",
) -> dict[str, float | None]:
    """A row's achieved TFLOP/s and its MFU against ``peaks[precision]`` (``mfu``) and against
    the bf16 peak (``mfu_bf16``, the issue's common denominator), keys prefixed by ``prefix``;
    an MFU is None where its peak was not measured."""
    tflop_per_s = images_per_s * gflop_per_image / 1e3
    return {
        f"{prefix}tflop_per_s": tflop_per_s,
        f"{prefix}mfu": mfu(tflop_per_s, peaks.get(precision)),
        f"{prefix}mfu_bf16": mfu(tflop_per_s, peaks.get("bf16")),
    }


def percent(fraction: float | None) -> str:
    """An MFU as the tables print it ("" where there is none)."""
    return "" if fraction is None else f"{100 * fraction:.1f}%"

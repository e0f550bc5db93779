"""What a model costs to run, counted without running it: the FLOPs of one forward pass on the
meta device (no memory, no data). `trainrepro params` reports them as multiply-adds, the
MobileNet papers' measure; the bench divides measured speed by them (trainrepro/bench/flops.py).
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(model: torch.nn.Module, image_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass of ``model`` (in eval mode) on one image of ``image_shape``
    (C, H, W), counted by FlopCounterMode on the meta device, on a copy: matrix products and
    convolutions only, 2 per multiply-accumulate (a conv's weight holds in/groups inputs per
    filter, so a depthwise conv counts k*k per output value); biases, norm layers, activations,
    pooling and additions are not counted. Multiply-adds (MAdds) are half of it."""
    model = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, *image_shape, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()

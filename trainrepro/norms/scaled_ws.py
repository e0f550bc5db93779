"""Scaled Weight Standardization (Brock, De & Smith, "Characterizing signal propagation to close
the performance gap in unnormalized ResNets", ICLR 2021, arXiv:2101.08692, Sec. 4.2).

Each output unit i of a conv is reparameterized as

    W^_i = gamma * g_i * (W_i - mean(W_i)) / (std(W_i) * sqrt(N)),    N = fan-in,

with a learnable gain g (init 1) and the nonlinearity's gamma, so that a conv fed with unit-
variance activations outputs unit variance and, the rows having zero mean, no mean shift. The
computation is DeepMind's (nfnets/base.py, ``WSConv2D.standardize_weight``): the biased variance
over (in, kh, kw), ``scale = rsqrt(max(var * N, eps)) * gain`` with eps 1e-4, a bias always
added (init 0), weights drawn N(0, 1/N). timm's ``ScaledStdConv2d`` instead adds eps 1e-6 to
the variance; the two agree up to that eps.

This is not Qiao et al.'s Weight Standardization (trainrepro/norms/weight_std.py, used with a norm
layer): that one has no 1/sqrt(N), no gain and no gamma, and expects a normalization after it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# gamma such that gamma * relu(z), z ~ N(0, 1), has unit variance: Var(relu(z)) = (1 - 1/pi) / 2
# (Brock et al. 2021a, Sec. 4.2). DeepMind's code bakes in a Monte-Carlo estimate,
# 1.7139588594436646 (nfnets/base.py, `nonlinearities['relu']`), 0.06% larger; we use the
# analytic value and the tests check the two agree.
GAMMA_RELU = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))
GAMMA_RELU_DEEPMIND = 1.7139588594436646
WS_EPS = 1e-4  # clamps var * fan_in, as nfnets/base.py


class GammaReLU(nn.Module):
    """``gamma * relu(x)``: the variance-preserving ReLU of NF-ResNets (DeepMind puts gamma in
    the activation, so every conv after it sees unit-variance inputs)."""

    def __init__(self, gamma: float = GAMMA_RELU) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.gamma

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:.7f}"


def scaled_standardize(
    weight: torch.Tensor, gain: torch.Tensor, gamma: float = 1.0, eps: float = WS_EPS
) -> torch.Tensor:
    """``gamma * gain_i * (W_i - mean_i) / sqrt(max(var_i * N, eps))`` per output unit i."""
    dims = tuple(range(1, weight.ndim))
    fan_in = weight[0].numel()
    mean = weight.mean(dim=dims, keepdim=True)
    var = weight.var(dim=dims, unbiased=False, keepdim=True)
    scale = torch.rsqrt(torch.clamp(var * fan_in, min=eps))
    scale = scale * (gain * gamma).view(-1, *([1] * (weight.ndim - 1)))
    return (weight - mean) * scale


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d with Scaled WS (Brock et al. 2021a): learnable per-unit ``gain`` (shape (out,),
    as DeepMind's, so unit-wise AGC treats it as one vector), ``gamma``, ``eps`` as above.

    ``padding`` defaults to "same" for odd kernels at stride 1 (k // 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
        gamma: float = 1.0,
        eps: float = WS_EPS,
        gain_init: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            bias=bias,
        )
        self.gamma = gamma
        self.eps = eps
        self.gain = nn.Parameter(torch.full((out_channels,), float(gain_init)))
        # VarianceScaling(1.0, fan_in, normal) as nfnets/base.py; WS makes the scale irrelevant.
        nn.init.normal_(self.weight, std=self.weight[0].numel() ** -0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def standardized_weight(self) -> torch.Tensor:
        return scaled_standardize(self.weight, self.gain, self.gamma, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma:g}, eps={self.eps:g}, scaled_ws=True"

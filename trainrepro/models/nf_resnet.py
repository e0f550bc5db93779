"""NF-ResNet for CIFAR: the normalizer-free ResNet of Brock, De & Smith ("Characterizing signal
propagation to close the performance gap in unnormalized ResNets", ICLR 2021, arXiv:2101.08692,
Sec. 4) on He et al.'s CIFAR layout (depth 6n+2; stages of n basic blocks with 16, 32, 64
channels at strides 1, 2, 2).

Every residual block computes h_{i+1} = h_i + alpha * f_i(h_i / beta_i), where beta_i is the
analytic expected std of h_i at initialization: Var(h_{i+1}) = Var(h_i) + alpha^2. f_i is a
pre-activation basic block, gamma-ReLU -> 3x3 Scaled-WS conv -> gamma-ReLU -> 3x3 Scaled-WS conv
(trainrepro/norms/scaled_ws.py).
A transition block (stride 2 or a change of width) takes its shortcut
from the *normalized* input, a 1x1 Scaled-WS conv of relu(h_i / beta_i), so the expected variance
restarts at 1 after it; as DeepMind's code (nfnets/nf_resnet.py, ``NF_ResNet``) the expected std
is reset after the first block of every stage ("still give it 1 block of growth"), which for the
first stage, whose first block keeps the identity shortcut here, gives the same 1 + alpha^2.

No layer normalizes activations: the model has no norm layer (``normalization=none``), see
:func:`build_nf_resnet`. ``skipinit`` adds DeepMind's learnable scalar gain, initialized to 0, at
the end of each residual branch (their default; timm's NF-ResNets leave it out).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NORMS, NoNormFactory, NormFactory
from trainrepro.norms.scaled_ws import GammaReLU, ScaledStdConv2d

WIDTHS = (16, 32, 64)
STRIDES = (1, 2, 2)
FC_INIT_STD = 0.01  # the classifier's init, N(0, 0.01), as nfnets/nf_resnet.py


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class NFBasicBlock(nn.Module):
    """h + alpha * skip_gain * conv2(act(conv1(act(h) * beta))); shortcut from the normalized
    input in transition blocks (Brock et al. 2021a, Sec. 4 and Fig. 2)."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, alpha: float, beta: float, skipinit: bool
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.act = GammaReLU()
        self.conv1 = ScaledStdConv2d(in_ch, out_ch, 3, stride=stride)
        self.conv2 = ScaledStdConv2d(out_ch, out_ch, 3)
        self.shortcut = (
            ScaledStdConv2d(in_ch, out_ch, 1, stride=stride)
            if stride != 1 or in_ch != out_ch
            else None
        )
        self.skip_gain = nn.Parameter(torch.zeros(())) if skipinit else None

    @property
    def is_transition(self) -> bool:
        return self.shortcut is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(x) * self.beta
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act(self.conv1(out)))
        if self.skip_gain is not None:
            out = out * self.skip_gain
        return out * self.alpha + shortcut

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:.6f}"


def expected_stds(blocks_per_stage: int, stages: int, alpha: float) -> list[float]:
    """The expected std of each block's input at init (beta_i), in block order, reset to 1
    after the first block of each stage as nfnets/nf_resnet.py."""
    stds, expected = [], 1.0
    for _ in range(stages):
        for index in range(blocks_per_stage):
            stds.append(expected)
            if index == 0:
                expected = 1.0
            expected = math.sqrt(expected**2 + alpha**2)
    return stds


class NFResNet(nn.Module):
    """Scaled-WS stem (16 channels), three stages of NF basic blocks, gamma-ReLU, pool, linear."""

    def __init__(
        self, *, depth: int, alpha: float, skipinit: bool, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        n = (depth - 2) // 6
        # The input images are not activations: no gamma on the stem.
        self.stem = ScaledStdConv2d(in_channels, WIDTHS[0], 3)
        betas = iter(1.0 / s for s in expected_stds(n, len(WIDTHS), alpha))
        stages: list[nn.Module] = []
        in_ch = WIDTHS[0]
        for out_ch, stride in zip(WIDTHS, STRIDES, strict=True):
            blocks = []
            for i in range(n):
                s = stride if i == 0 else 1
                blocks.append(NFBasicBlock(in_ch, out_ch, s, alpha, next(betas), skipinit))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.act = GammaReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        nn.init.normal_(self.fc.weight, std=FC_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.stages(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


def _norm_name(norm_layer: NormFactory) -> str:
    """The conf/normalization option that makes factories of this type, for the message."""
    for name, builder in NORMS.items():
        try:
            if type(builder()) is type(norm_layer):
                return name
        except (TypeError, ValueError):
            continue
    return type(norm_layer).__name__


def build_nf_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    norm_layer: NormFactory,
    depth: int = 20,
    alpha: float = 0.2,
    skipinit: bool = False,
) -> nn.Module:
    """NF-ResNet-``depth`` for CIFAR (Brock et al. 2021a) with residual scale ``alpha``.

    The rule for ``norm_layer``: it must be ``normalization=none``. Any other normalization is
    refused (ConfigError naming it) rather than ignored, so a run's recorded config never
    claims a normalization its model does not have. ``image_size``: global pooling takes any.
    """
    del image_size
    if not isinstance(norm_layer, NoNormFactory):
        name = _norm_name(norm_layer)
        raise ConfigError(
            "normalization", name, "model=nf_resnet is normalizer-free; use normalization=none"
        )
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ConfigError("model.depth", depth, "must be 6n+2 with n >= 1 (8, 14, 20, 26, 56)")
    if not _is_real(alpha) or not alpha > 0:
        raise ConfigError("model.alpha", alpha, "must be a number > 0 (the paper: 0.2)")
    if not isinstance(skipinit, bool):
        raise ConfigError("model.skipinit", skipinit, "must be true or false")
    return NFResNet(
        depth=depth,
        alpha=float(alpha),
        skipinit=skipinit,
        num_classes=num_classes,
        in_channels=in_channels,
    )

"""The CIFAR ResNet of He, Zhang, Ren & Sun ("Deep Residual Learning", CVPR 2016, Sec. 4.2).

Depth 6n+2: a 3x3 conv with 16 channels (+ norm, ReLU), three stages of n post-activation
basic blocks with 16, 32 and 64 channels on 32x32, 16x16 and 8x8 maps (the first block of
stages 2 and 3 strides by 2), global average pool and a linear classifier. n = 3, 5, 7, 9, 18
gives ResNet-20, 32, 44, 56, 110 (0.27M to 1.7M parameters).

Where a block changes the shape, the shortcut is

* ``"A"``: parameter-free, as in the paper's CIFAR nets: the input is subsampled at stride 2
  and the new channels are zeros;
* ``"B"``: a 1x1 conv at stride 2 followed by a norm (a projection), as in the CIFAR ``resnet``
  model of the public code the RAdam paper (Liu et al., ICLR 2020) trained with.

Every other shortcut is the identity. Every norm layer comes from ``norm_layer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NormFactory

SHORTCUTS = ("A", "B")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PadShortcut(nn.Module):
    """Option A: keep every ``stride``-th pixel and append ``extra`` all-zero channels."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def _shortcut(
    in_ch: int, out_ch: int, stride: int, kind: str, norm_layer: NormFactory
) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(stride, out_ch - in_ch)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(out_ch))


class CifarBasicBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm, add the shortcut, then ReLU (post-activation)."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, shortcut: str, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm_layer(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, shortcut, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2): 16-channel stem, stages of 16/32/64 channels at strides 1, 2, 2."""

    def __init__(
        self,
        *,
        depth: int,
        shortcut: str,
        num_classes: int,
        in_channels: int,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False),
            norm_layer(16),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_ch = 16
        for out_ch, stride in zip((16, 32, 64), (1, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(
                    CifarBasicBlock(in_ch, out_ch, stride if i == 0 else 1, shortcut, norm_layer)
                )
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def build_resnet_cifar(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    norm_layer: NormFactory,
    depth: int = 20,
    shortcut: str = "B",
) -> nn.Module:
    """ResNet-``depth`` for CIFAR (He et al. 2016, Sec. 4.2) with option ``shortcut``
    ("A" zero-padding as in the paper, "B" 1x1 projection as in the RAdam authors' code).

    ``image_size`` is accepted for the common interface; global pooling handles any size.
    """
    del image_size
    if not _is_int(depth) or depth < 8 or (depth - 2) % 6:
        raise ConfigError("model.depth", depth, "must be 6n+2 with n >= 1 (20, 32, 44, 56, 110)")
    if not isinstance(shortcut, str) or shortcut not in SHORTCUTS:
        raise ConfigError("model.shortcut", shortcut, "must be A (zero-pad) or B (projection)")
    return CifarResNet(
        depth=depth,
        shortcut=shortcut,
        num_classes=num_classes,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )

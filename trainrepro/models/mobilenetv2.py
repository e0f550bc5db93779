"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, CVPR 2018), CIFAR stride variant.

Inverted residual blocks with linear bottlenecks (Table 1 of the paper): a 1x1 expansion by t,
a 3x3 depthwise conv, and a 1x1 linear projection (no activation, Sec. 3.2), with a residual
connection where input and output shapes agree; ReLU6 elsewhere. For 32x32 inputs the first conv
and the second stage (t=6, c=24, n=2) use stride 1 instead of 2, so the last feature map is 4x4
instead of 1x1. Every norm layer comes from ``norm_layer``.
"""

from __future__ import annotations

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NormFactory

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2, with the
# CIFAR change of the second stage's stride from 2 to 1.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), but never more than
    10% below ``channels`` -- the rounding of the authors' reference implementation."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def conv_norm_act(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    norm_layer: NormFactory,
    groups: int = 1,
    act: bool = True,
) -> nn.Sequential:
    """Conv (bias-free: a norm follows), norm, and ReLU6 unless the layer is linear."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        norm_layer(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3) - project (1x1, linear), plus identity when shapes match."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, expansion: int, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        hidden = int(round(in_ch * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_norm_act(in_ch, hidden, 1, 1, norm_layer))
        layers.append(conv_norm_act(hidden, hidden, 3, stride, norm_layer, groups=hidden))
        layers.append(conv_norm_act(hidden, out_ch, 1, 1, norm_layer, act=False))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with ``features`` (ending in the 1x1 conv to 1280 channels) and
    ``classifier`` (dropout, linear) after global average pooling."""

    def __init__(
        self,
        *,
        width_mult: float,
        dropout: float,
        num_classes: int,
        in_channels: int,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__()
        in_ch = round_channels(STEM_CHANNELS * width_mult)
        # The paper widens the last conv only for multipliers above 1 (Sec. 6.1).
        last = round_channels(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_norm_act(in_channels, in_ch, 3, 1, norm_layer)]
        for t, c, n, s in STAGES:
            out_ch = round_channels(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, norm_layer))
                in_ch = out_ch
        layers.append(conv_norm_act(in_ch, last, 1, 1, norm_layer))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_mobilenetv2(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    norm_layer: NormFactory,
    width_mult: float = 1.0,
    dropout: float = 0.0,
) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018) at width multiplier ``width_mult``; the paper's
    ImageNet model uses dropout 0.2 before the classifier. Any ``image_size`` works."""
    del image_size
    if isinstance(width_mult, bool) or not isinstance(width_mult, int | float) or width_mult <= 0:
        raise ConfigError("model.width_mult", width_mult, "must be a number > 0")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError("model.dropout", dropout, "must be a number in [0, 1)")
    return MobileNetV2(
        width_mult=float(width_mult),
        dropout=float(dropout),
        num_classes=num_classes,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )

"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, CVPR 2018), CIFAR stride variant.

Inverted residual blocks with linear bottlenecks (Table 1 of the paper): a 1x1 expansion by t,
a 3x3 depthwise conv, and a 1x1 linear projection (no activation, Sec. 3.2), with a residual
connection where input and output shapes agree; ReLU6 elsewhere. For 32x32 inputs the first conv
and the second stage (t=6, c=24, n=2) use stride 1 instead of 2, so the last feature map is 4x4
instead of 1x1. Every norm layer comes from ``norm_layer``.

The ablations of the paper's Figure 6 are two switches; the defaults are the paper's model:

- ``projection`` (Fig. 6a): ``linear``, or ``relu6``: ReLU6 after the projection's norm, the
  non-linear bottleneck.
- ``shortcut`` (Fig. 6b): ``bottleneck`` (identity between the thin block in- and outputs,
  where stride is 1 and in == out), ``expansion`` (identity between the expanded tensors, see
  :class:`ExpansionResidual`), or ``none``. All three have the same parameters.
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
PROJECTIONS = ("linear", "relu6")
SHORTCUTS = ("bottleneck", "expansion", "none")


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


def hidden_channels(in_ch: int, expansion: int) -> int:
    """The width of a block's expanded tensor (what its depthwise conv reads)."""
    return int(round(in_ch * expansion))


def block_layers(
    in_ch: int,
    out_ch: int,
    stride: int,
    expansion: int,
    norm_layer: NormFactory,
    projection: str = "linear",
) -> tuple[nn.Module | None, nn.Module, nn.Module]:
    """A block's expansion (None for t=1: the depthwise conv reads the input itself),
    depthwise and projection layers."""
    hidden = hidden_channels(in_ch, expansion)
    expand = conv_norm_act(in_ch, hidden, 1, 1, norm_layer) if expansion != 1 else None
    depthwise = conv_norm_act(hidden, hidden, 3, stride, norm_layer, groups=hidden)
    project = conv_norm_act(hidden, out_ch, 1, 1, norm_layer, act=projection == "relu6")
    return expand, depthwise, project


class Residual(nn.Module):
    """``block(x)``, plus ``x`` where ``use_residual`` (the sum is not activated)."""

    def __init__(self, layers: list[nn.Module], use_residual: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)
        self.use_residual = use_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class InvertedResidual(Residual):
    """Expand (1x1) - depthwise (3x3) - project (1x1), plus identity when ``shortcut`` and the
    shapes match (stride 1, in == out): the shortcut between bottlenecks."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expansion: int,
        norm_layer: NormFactory,
        projection: str = "linear",
        shortcut: bool = True,
    ) -> None:
        layers = block_layers(in_ch, out_ch, stride, expansion, norm_layer, projection)
        super().__init__(
            [m for m in layers if m is not None], shortcut and stride == 1 and in_ch == out_ch
        )


class ExpansionResidual(Residual):
    """A unit of ``shortcut=expansion`` (Fig. 6b, "shortcut between expansions"): the same
    layers as the inverted residual blocks, cut at the expanded tensors instead of the thin ones.

    Unit i is block i's depthwise conv and projection, then block i+1's expansion (conv, norm,
    ReLU6): it maps the tensor block i's depthwise conv reads to the one block i+1's reads, and
    adds its input to that, after the ReLU6 (as with the bottleneck shortcut, the sum is not
    activated). So each residual function is wide -> 1x1 reduce -> 1x1 expand -> wide, the
    classic placement (Fig. 3a). It adds when the two tensors agree in shape: block i has stride
    1 and both have the same width; with the paper's t=6 that is exactly when block i has
    in == out, so the network has as many shortcuts as with ``bottleneck``, half a block later.
    Before the first unit stands block 0's expansion (none for t=1); the last unit ends at its
    projection and never adds.
    """


def expansion_units(
    blocks: list[tuple[int, int, int, int]], norm_layer: NormFactory, projection: str
) -> list[nn.Module]:
    """The layers of ``blocks`` ((in, out, stride, t) each) regrouped into ExpansionResiduals."""
    parts = [block_layers(*b, norm_layer, projection) for b in blocks]
    layers: list[nn.Module] = [] if parts[0][0] is None else [parts[0][0]]
    for i, ((in_ch, out_ch, stride, t), (_, depthwise, project)) in enumerate(
        zip(blocks, parts, strict=True)
    ):
        if i + 1 == len(blocks):
            layers.append(ExpansionResidual([depthwise, project], use_residual=False))
            break
        expand = parts[i + 1][0]
        # The next expanded tensor: its expansion's output, or (t=1) the projection's.
        width = out_ch if expand is None else hidden_channels(out_ch, blocks[i + 1][3])
        unit = [depthwise, project] + ([expand] if expand is not None else [])
        use = stride == 1 and width == hidden_channels(in_ch, t)
        layers.append(ExpansionResidual(unit, use_residual=use))
    return layers


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
        projection: str = "linear",
        shortcut: str = "bottleneck",
    ) -> None:
        super().__init__()
        in_ch = round_channels(STEM_CHANNELS * width_mult)
        # The paper widens the last conv only for multipliers above 1 (Sec. 6.1).
        last = round_channels(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_norm_act(in_channels, in_ch, 3, 1, norm_layer)]
        blocks = []  # (in, out, stride, t) of each inverted residual block
        for t, c, n, s in STAGES:
            out_ch = round_channels(c * width_mult)
            for i in range(n):
                blocks.append((in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        if shortcut == "expansion":
            layers += expansion_units(blocks, norm_layer, projection)
        else:
            layers += [
                InvertedResidual(*b, norm_layer, projection, shortcut == "bottleneck")
                for b in blocks
            ]
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
    projection: str = "linear",
    shortcut: str = "bottleneck",
) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018) at width multiplier ``width_mult``; the paper's
    ImageNet model uses dropout 0.2 before the classifier. ``projection`` and ``shortcut``:
    the Figure 6 ablations (module docstring). Any ``image_size`` works."""
    del image_size
    if isinstance(width_mult, bool) or not isinstance(width_mult, int | float) or width_mult <= 0:
        raise ConfigError("model.width_mult", width_mult, "must be a number > 0")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError("model.dropout", dropout, "must be a number in [0, 1)")
    if projection not in PROJECTIONS:
        raise ConfigError("model.projection", projection, f"must be {' or '.join(PROJECTIONS)}")
    if shortcut not in SHORTCUTS:
        raise ConfigError("model.shortcut", shortcut, f"must be one of {', '.join(SHORTCUTS)}")
    return MobileNetV2(
        width_mult=float(width_mult),
        dropout=float(dropout),
        num_classes=num_classes,
        in_channels=in_channels,
        norm_layer=norm_layer,
        projection=projection,
        shortcut=shortcut,
    )

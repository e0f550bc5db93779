"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016).

WRN-d-k: a 16-channel 3x3 stem, then three groups of n = (d - 4) / 6 pre-activation basic
blocks (norm-ReLU-conv, twice) with 16k, 32k and 64k channels at strides 1, 2, 2, and a final
norm-ReLU, global average pool and linear classifier. Dropout sits between the two convs of a
block (the paper's Sec. 2.4). Every norm layer comes from ``norm_layer``.
"""

from __future__ import annotations

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NormFactory


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class WideBasicBlock(nn.Module):
    """Pre-activation basic block B(3,3) with dropout between the convs."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, dropout: float, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm_layer(out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.norm1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(torch.relu(self.norm2(out))))
        # As in the authors' code, a projection shortcut reads the pre-activated input,
        # while an identity shortcut carries the raw input.
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-depth-width for images of any size (global average pooling at the end)."""

    def __init__(
        self,
        *,
        depth: int,
        width: int,
        dropout: float,
        num_classes: int,
        in_channels: int,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_ch = widths[0]
        for out_ch, stride in zip(widths[1:], (1, 2, 2), strict=True):
            for i in range(n):
                layers.append(
                    WideBasicBlock(in_ch, out_ch, stride if i == 0 else 1, dropout, norm_layer)
                )
                in_ch = out_ch
        self.blocks = nn.Sequential(*layers)
        self.norm = norm_layer(in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = self.pool(torch.relu(self.norm(x)))
        return self.fc(torch.flatten(x, 1))


def build_wrn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    norm_layer: NormFactory,
    depth: int = 16,
    width: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016); the paper's CIFAR nets use dropout
    0.3 for some runs. ``image_size`` is accepted for the common interface; any size works."""
    del image_size  # global average pooling makes the net size-agnostic
    if not _is_int(depth) or depth < 10 or (depth - 4) % 6:
        raise ConfigError("model.depth", depth, "WRN depth must be 6n+4 (10, 16, 22, 28, 40)")
    if not _is_int(width) or width < 1:
        raise ConfigError("model.width", width, "must be a positive integer")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError("model.dropout", dropout, "must be a number in [0, 1)")
    return WideResNet(
        depth=depth,
        width=width,
        dropout=float(dropout),
        num_classes=num_classes,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )

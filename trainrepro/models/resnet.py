"""ResNet for small images (He, Zhang, Ren & Sun, "Deep Residual Learning", CVPR 2016).

The ImageNet layouts (18/34 with basic blocks, 50/101 with bottlenecks) with the usual CIFAR
stem: one 3x3 conv at stride 1 and no max pool, so 32x32 inputs reach the last stage at 4x4.
Stages have ``width`` x 1, 2, 4, 8 channels (x4 at a bottleneck's output); shortcuts are
identity, or a 1x1 conv + norm where the shape changes (the paper's option B). Bottlenecks
stride in their 3x3 conv (as torchvision's "v1.5" does) rather than the first 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NormFactory


class BasicBlock(nn.Module):
    """Two 3x3 convs, each followed by a norm; ReLU after the residual sum (post-activation)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm_layer(planes)
        self.shortcut = _shortcut(in_ch, planes * self.expansion, stride, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), each followed by a norm; ReLU after the sum."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.norm1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.norm3 = norm_layer(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = torch.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


def _shortcut(in_ch: int, out_ch: int, stride: int, norm_layer: NormFactory) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(out_ch))


# depth -> (block type, blocks per stage), Table 1 of the paper.
LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, four stages at strides 1, 2, 2, 2, pool, linear."""

    def __init__(
        self,
        *,
        depth: int,
        width: int,
        num_classes: int,
        in_channels: int,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__()
        block, counts = LAYOUTS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            norm_layer(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_ch = width
        for i, (count, stride) in enumerate(zip(counts, (1, 2, 2, 2), strict=True)):
            planes = width * 2**i
            blocks: list[nn.Module] = []
            for j in range(count):
                blocks.append(block(in_ch, planes, stride if j == 0 else 1, norm_layer))
                in_ch = planes * block.expansion
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


def build_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    norm_layer: NormFactory,
    depth: int = 18,
    width: int = 64,
) -> nn.Module:
    """ResNet-``depth`` (He et al. 2016) with ``width`` stem channels (64 in the paper).

    ``image_size`` is accepted for the common interface; global pooling handles any size.
    """
    del image_size
    if isinstance(depth, bool) or depth not in LAYOUTS:
        raise ConfigError("model.depth", depth, "must be one of 18, 34, 50, 101")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError("model.width", width, "must be a positive integer")
    return ResNet(
        depth=depth,
        width=width,
        num_classes=num_classes,
        in_channels=in_channels,
        norm_layer=norm_layer,
    )

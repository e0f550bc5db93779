"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, Proc. IEEE 1998), in its common modern form.

conv5x5(6)-norm-ReLU-maxpool, conv5x5(16)-norm-ReLU-maxpool, fc120-ReLU, fc84-ReLU, fc.
The original's tanh units, trainable subsampling, sparse C3 connections and RBF output are
replaced by ReLU, max pooling, full connections and a linear layer. The first conv pads by 2, so
a 28x28 MNIST digit is seen as the original's 32x32 input (16 x 5 x 5 features before fc120);
the flattened size is computed from ``image_size``, so CIFAR's 32x32 works too (16 x 6 x 6).
"""

from __future__ import annotations

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NormFactory


def feature_size(image_size: int) -> int:
    """Side of the feature map after the second pool (0 when the image is too small)."""
    side = image_size // 2  # conv1 keeps the size (pad 2), pool halves it
    side -= 4  # conv2 has no padding
    return max(side // 2, 0)


class LeNet5(nn.Module):
    """LeNet-5 with a norm layer after each conv, from ``norm_layer``."""

    def __init__(
        self, *, num_classes: int, in_channels: int, image_size: int, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        side = feature_size(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2, bias=False),
            norm_layer(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=False),
            norm_layer(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build_lenet5(
    *, num_classes: int, in_channels: int, image_size: int, norm_layer: NormFactory
) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) for ``image_size`` x ``image_size`` inputs (at least 12).

    The convs have no bias because a norm follows; with ``normalization=none`` they stay
    bias-free (the fully connected layers keep theirs).
    """
    if feature_size(image_size) < 1:
        raise ConfigError(
            "model",
            "lenet5",
            f"needs images of at least 12x12 pixels, got {image_size}x{image_size}",
        )
    return LeNet5(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        norm_layer=norm_layer,
    )

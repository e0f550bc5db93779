"""Batch-Group Normalization (Summers & Dinneen, ICLR 2020, "Four Things Everyone Should Know
to Improve Batch Normalization", Sec. 3.4), for training at very small batch sizes.

In training, the C channels are split into ``groups`` contiguous groups (as Group Norm does) and
the batch of N examples into ``batch_groups`` contiguous groups of N / batch_groups examples
(as ghost batches are); each (batch group, channel group) cell is normalized with its own mean
and biased variance over (its examples, its C/groups channels, H, W), then a per-channel scale
and shift is applied. The extremes are the two parents:

* ``groups = C``, ``batch_groups = 1``: each channel over (N, H, W), i.e. ``BatchNorm2d``;
* ``batch_groups = N``: each example over (C/groups, H, W), i.e. ``GroupNorm(groups, C)``.

Evaluation (our decision; the paper text was not at hand to confirm it, see papers.md sec. 3
[R]): like BN, on running statistics. Each batch group's statistics update the running mean and
(unbiased) variance once, in order, as ghost BN's ghost batches do, with every channel of a
group receiving the group's value; evaluation is then exactly ``BatchNorm2d``'s
eval-mode formula on those per-channel buffers, so a prediction does not depend on the other
examples of the evaluation batch. At the GN extreme this differs from ``GroupNorm`` at eval
(which has no running statistics), by design: one rule for every setting of the two keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.ghost_bn import update_running_stats_in_order


class BatchGroupNorm2d(nn.modules.batchnorm._NormBase):
    """Normalization over groups of channels x groups of examples (Summers & Dinneen 2020).

    Parameters and buffers are ``BatchNorm2d``'s (per-channel weight, bias, running_mean,
    running_var, num_batches_tracked), so the state dict has the same keys and shapes.
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 8,
        batch_groups: int = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats=True)
        if num_features % groups:
            raise ConfigError(
                "normalization.groups",
                groups,
                f"does not divide the {num_features} channels of a layer",
            )
        self.groups = groups
        self.batch_groups = batch_groups

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}, batch_groups={self.batch_groups}"

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        batch, channels = x.shape[:2]
        if batch % self.batch_groups:
            raise ConfigError(
                "normalization.batch_groups",
                self.batch_groups,
                f"does not divide the batch size {batch}",
            )
        b, g = self.batch_groups, self.groups
        n = batch // b
        # Cell (batch group j, channel group k) becomes channel j*g + k of a batch of n, so one
        # batch_norm kernel computes every cell's statistics (momentum 1 leaves them in the
        # buffers: mean and unbiased variance) and their gradients at once.
        cell = (channels // g) * math.prod(x.shape[2:])
        xs = x.reshape(b, n, g, cell).transpose(0, 1).reshape(n, b * g, cell)
        mean = torch.zeros(b * g, dtype=self.running_mean.dtype, device=x.device)
        var = torch.ones(b * g, dtype=self.running_var.dtype, device=x.device)
        y = F.batch_norm(xs, mean, var, None, None, True, 1.0, self.eps)
        y = y.reshape(n, b, channels, *x.shape[2:]).transpose(0, 1).reshape(x.shape)
        per_channel = channels // g
        update_running_stats_in_order(
            self,
            mean.view(b, g).repeat_interleave(per_channel, dim=1),
            var.view(b, g).repeat_interleave(per_channel, dim=1),
        )
        if self.affine:
            shape = (1, channels) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

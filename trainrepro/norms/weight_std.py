"""Weight Standardization (Qiao, Wang, Liu, Shen & Yuille 2019, arXiv:1903.10520, Sec. 3).

Every conv's weight is standardized per output channel before the convolution, differentiably
(the gradient flows through the mean and the std to the raw weight):

    W_hat[o] = (W[o] - mean(W[o])) / (std(W[o]) + eps),   eps = 1e-5,

with mean and std over the fan-in (in_channels/groups x kh x kw). We pin the authors' PyTorch
layer (joe-siyuan-qiao/WeightStandardization, README.md, "Implementing WS as a layer"):
``torch.std_mean(weight, dim=(1, 2, 3))``, i.e. the *unbiased* std, with eps *added to the
std*, not to the variance. (Their other code differs: timm's StdConv2d uses the biased variance
with eps 1e-6 inside the sqrt; see /work/shared/reference/papers.md sec. 2.)

There is no learnable gain: WS is meant to be followed by a normalization layer (the README:
"only replace convolutional layers that are followed by normalization layers"), which holds for
every conv of trainrepro's models; the linear classifier is left alone.

The models build plain ``nn.Conv2d``; :func:`standardize_convs` turns each into a
:class:`WSConv2d` by swapping its class after the model is built. Parameters, buffers and the
``state_dict`` keys stay exactly those of ``nn.Conv2d`` (the stored weight is the raw one), so
checkpoints, optimizers and ``channels_last`` are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn

from trainrepro.errors import ConfigError

WS_EPS = 1e-5  # the authors' value, added to the (unbiased) std


def standardize_weight(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """(W - mean) / (std + eps) per output channel (dim 0), over all other dims."""
    dims = tuple(range(1, weight.dim()))
    std, mean = torch.std_mean(weight, dim=dims, keepdim=True)  # unbiased, as the authors'
    return (weight - mean) / (std + eps)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with its standardized weight (Qiao et al. 2019)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, standardize_weight(self.weight), self.bias)


def _check_fan_in(name: str, conv: nn.Conv2d) -> None:
    fan_in = conv.weight[0].numel()
    if fan_in < 2:
        # The unbiased std of one number is NaN: nothing to standardize.
        raise ConfigError(
            "normalization.weight_standardization",
            True,
            f"conv {name or '<model>'} has a fan-in of {fan_in}; WS needs at least 2",
        )


def standardize_convs(model: nn.Module) -> nn.Module:
    """Make every ``nn.Conv2d`` of ``model`` a :class:`WSConv2d` in place; return ``model``.

    The class swap keeps each module's parameters (the same tensors), buffers and hooks.
    """
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            _check_fan_in(name, module)
            module.__class__ = WSConv2d
    return model

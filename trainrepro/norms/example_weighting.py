"""Inference example weighting (Summers & Dinneen, ICLR 2020, "Four Things Everyone Should Know
to Improve Batch Normalization", Sec. 3.1).

In training, each example is part of the batch it is normalized with, so it contributes 1/B of
its own statistics; at inference, plain BN uses the population (running) statistics only. The
paper's fix lets each example contribute weight ``alpha`` to its own statistics at evaluation,
per channel, with E over the example's own positions (H, W):

    mu_i      = alpha * E[x_i]   + (1 - alpha) * m
    sigma_i^2 = alpha * E[x_i^2] + (1 - alpha) * (v + m^2) - mu_i^2

where m is the running mean and v + m^2 the running second moment (torch keeps the running
variance v, so the second moment is recovered as v + m^2). The formula is papers.md sec. 3 [S],
as implemented by ostamand/tensorflow-tabnet (tabnet/models/gbn.py, BatchNormInferenceWeighting,
which keeps a running mean of squares and cites arXiv:1906.03548); the paper's text was not at
hand. alpha = 0 is plain BN; alpha is chosen after training on held-out data
(``trainrepro bn-alpha``, trainrepro/analysis/bn_alpha.py). Training is unchanged.

:func:`example_weighting` applies it to every ``BatchNorm2d`` of a model (ghost BN included:
its evaluation is plain BN) for the duration of a ``with`` block; nothing is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from trainrepro.errors import ConfigError


def weighted_batch_norm(layer: nn.BatchNorm2d, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eval-mode BN of ``x`` where each example weighs ``alpha`` in its own statistics."""
    dims = tuple(range(2, x.dim()))
    dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 at least, as BN under autocast
    xf = x.to(dtype)
    own_mean = xf.mean(dims)  # [N, C]
    own_sq = (xf * xf).mean(dims)
    m = layer.running_mean.to(dtype)
    second = layer.running_var.to(dtype) + m * m
    mean = alpha * own_mean + (1.0 - alpha) * m
    # Cancellation can leave a tiny negative number where the variance is ~0.
    var = (alpha * own_sq + (1.0 - alpha) * second - mean * mean).clamp_min(0.0)
    shape = (*mean.shape, *(1,) * len(dims))
    y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + layer.eps)
    if layer.affine:
        scale = (1, -1, *(1,) * len(dims))
        y = y * layer.weight.to(dtype).view(scale) + layer.bias.to(dtype).view(scale)
    return y.to(x.dtype)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers (ghost BN included) that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None
    ]


def check_alpha(alpha: float) -> float:
    # NaN fails the range test too.
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ConfigError("alpha", alpha, "must be a number in [0, 1]")
    return float(alpha)


@contextlib.contextmanager
def example_weighting(model: nn.Module, alpha: float) -> Iterator[nn.Module]:
    """Within the block, every BN layer of ``model`` evaluates with example weight ``alpha``.

    Only eval mode changes (a layer in train mode runs its own forward). ``alpha = 0`` leaves
    the layers untouched, so it is plain evaluation bit for bit, not the formula's rounding of
    it. Raises a ConfigError for a model without BN layers.
    """
    alpha = check_alpha(alpha)
    layers = bn_layers(model)
    if not layers:
        kinds = sorted({type(m).__name__ for m in model.modules() if m is not model})
        found = next((k for k in kinds if "Norm" in k), "no normalization")
        raise ConfigError(
            "normalization",
            found,
            "the model has no batch norm layer; inference example weighting needs bn or ghost_bn",
        )
    if alpha == 0.0:
        yield model
        return
    saved = [layer.__dict__.get("forward") for layer in layers]

    def weighted(layer: nn.BatchNorm2d) -> object:
        def forward(x: torch.Tensor) -> torch.Tensor:
            if layer.training:
                return type(layer).forward(layer, x)
            return weighted_batch_norm(layer, x, alpha)

        return forward

    try:
        for layer in layers:
            layer.forward = weighted(layer)  # an instance attribute shadows the class's forward
        yield model
    finally:
        for layer, old in zip(layers, saved, strict=True):
            del layer.forward
            if old is not None:
                layer.forward = old

"""Normalization layers as factories, so any model can be built with any normalization.

A model never names a normalization class: it calls the ``NormFactory`` it was given with a
layer's channel count. The five options compared by Wu & He, "Group Normalization" (ECCV 2018,
Fig. 2) are provided:

* ``bn``   Batch Norm (Ioffe & Szegedy 2015): per channel, over (N, H, W).
* ``gn``   Group Norm (Wu & He 2018): per sample, over (C/G channels, H, W).
* ``ln``   Layer Norm (Ba et al. 2016): per sample, over (C, H, W); GroupNorm with one group.
* ``in``   Instance Norm (Ulyanov et al. 2016): per sample and channel, over (H, W);
           GroupNorm with C groups, which keeps the per-channel affine and no running stats.
* ``none`` the identity, for the unnormalized baselines.

and ``ghost_bn``, Ghost Batch Norm (Hoffer, Hubara & Soudry 2017; trainrepro/ghost_bn.py): batch
norm over independent ghost batches of ``ghost_batch_size`` samples, as in Smith et al. (2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError
from trainrepro.ghost_bn import GhostBatchNorm2d

NormFactory = Callable[[int], nn.Module]

# Module classes that count as normalization, e.g. for leaving their affine parameters out of
# weight decay. GroupNorm covers gn, ln and in as built here.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    GhostBatchNorm2d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_eps(eps: Any) -> None:
    if not _is_real(eps) or not eps > 0:
        raise ConfigError("normalization.eps", eps, "must be a number > 0")


def _check_affine(affine: Any) -> None:
    if not isinstance(affine, bool):
        raise ConfigError("normalization.affine", affine, "must be true or false")


def _check_channels(num_channels: Any) -> None:
    # A model bug rather than a config value, hence not a ConfigError.
    if not isinstance(num_channels, int) or isinstance(num_channels, bool) or num_channels < 1:
        raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")


@dataclass(frozen=True)
class BatchNormFactory:
    """Makes ``BatchNorm2d`` layers (Ioffe & Szegedy 2015)."""

    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = True

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.BatchNorm2d(
            num_channels, eps=self.eps, momentum=self.momentum, affine=self.affine
        )


@dataclass(frozen=True)
class GhostBatchNormFactory:
    """Makes ``GhostBatchNorm2d`` layers (Hoffer, Hubara & Soudry 2017)."""

    ghost_batch_size: int = 128
    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = True

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return GhostBatchNorm2d(
            num_channels,
            ghost_batch_size=self.ghost_batch_size,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
        )


@dataclass(frozen=True)
class GroupNormFactory:
    """Makes ``GroupNorm`` layers with a fixed number of groups (Wu & He 2018)."""

    groups: int = 8
    eps: float = 1e-5
    affine: bool = True

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        if num_channels % self.groups:
            raise ConfigError(
                "normalization.groups",
                self.groups,
                f"does not divide the {num_channels} channels of a layer",
            )
        return nn.GroupNorm(self.groups, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True)
class LayerNormFactory:
    """Layer Norm over (C, H, W) per sample (Ba et al. 2016), as ``GroupNorm(1, C)``.

    GroupNorm(1, C) gives one scale and shift per channel, as the GN paper's LN baseline does,
    instead of ``nn.LayerNorm``'s per-element affine that would fix the input size.
    """

    eps: float = 1e-5
    affine: bool = True

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.GroupNorm(1, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True)
class InstanceNormFactory:
    """Instance Norm per sample and channel (Ulyanov et al. 2016), as ``GroupNorm(C, C)``."""

    eps: float = 1e-5
    affine: bool = True

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.GroupNorm(num_channels, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True)
class NoNormFactory:
    """Makes ``nn.Identity`` layers: the network without normalization."""

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.Identity()


def _check_momentum(momentum: Any) -> None:
    if not _is_real(momentum) or not 0 < momentum <= 1:
        raise ConfigError("normalization.momentum", momentum, "must be a number in (0, 1]")


def batch_norm(*, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True) -> NormFactory:
    """Batch Normalization (Ioffe & Szegedy, ICML 2015).

    ``momentum`` is PyTorch's: the weight of the new batch in the running statistics.
    """
    _check_momentum(momentum)
    _check_eps(eps)
    _check_affine(affine)
    return BatchNormFactory(momentum=float(momentum), eps=float(eps), affine=affine)


def ghost_batch_norm(
    *, ghost_batch_size: int = 128, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True
) -> NormFactory:
    """Ghost Batch Normalization (Hoffer, Hubara & Soudry, NeurIPS 2017).

    Training batches are normalized in independent ghost batches of ``ghost_batch_size``
    (Smith et al. 2018 use 128), which must divide every training batch and micro-batch.
    ``momentum`` is applied once per ghost batch, as if each were its own BatchNorm step.
    """
    g = ghost_batch_size
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        raise ConfigError(
            "normalization.ghost_batch_size", ghost_batch_size, "must be a positive integer"
        )
    _check_momentum(momentum)
    _check_eps(eps)
    _check_affine(affine)
    return GhostBatchNormFactory(
        ghost_batch_size=ghost_batch_size, momentum=float(momentum), eps=float(eps), affine=affine
    )


def group_norm(*, groups: int = 8, eps: float = 1e-5, affine: bool = True) -> NormFactory:
    """Group Normalization (Wu & He, ECCV 2018). Every normalized layer's width must be a
    multiple of ``groups``; the factory raises a ConfigError at the first one that is not."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ConfigError("normalization.groups", groups, "must be a positive integer")
    _check_eps(eps)
    _check_affine(affine)
    return GroupNormFactory(groups=groups, eps=float(eps), affine=affine)


def layer_norm(*, eps: float = 1e-5, affine: bool = True) -> NormFactory:
    """Layer Normalization (Ba, Kiros & Hinton 2016) over (C, H, W) of each sample."""
    _check_eps(eps)
    _check_affine(affine)
    return LayerNormFactory(eps=float(eps), affine=affine)


def instance_norm(*, eps: float = 1e-5, affine: bool = True) -> NormFactory:
    """Instance Normalization (Ulyanov, Vedaldi & Lempitsky 2016) over (H, W)."""
    _check_eps(eps)
    _check_affine(affine)
    return InstanceNormFactory(eps=float(eps), affine=affine)


def no_norm() -> NormFactory:
    """No normalization: every norm layer is the identity."""
    return NoNormFactory()


NORMS: dict[str, Callable[..., NormFactory]] = {
    "bn": batch_norm,
    "gn": group_norm,
    "ln": layer_norm,
    "in": instance_norm,
    "none": no_norm,
    "ghost_bn": ghost_batch_norm,
}


def create_norm(name: str, **kwargs: Any) -> NormFactory:
    """The factory of normalization ``name`` (a conf/normalization option) with ``kwargs``."""
    if name not in NORMS:
        raise ConfigError("normalization", name, f"unknown; valid: {', '.join(NORMS)}")
    builder = NORMS[name]
    check_kwargs(builder, "normalization", kwargs)
    return builder(**kwargs)


def ghost_batch_size_of(model_or_factory: nn.Module | NormFactory) -> int | None:
    """The number every training batch must be a multiple of, or None without ghost batch norm.

    Takes a model (its ``GhostBatchNorm2d`` layers; the lcm if they differ) or a norm factory.
    """
    if isinstance(model_or_factory, GhostBatchNormFactory):
        return model_or_factory.ghost_batch_size
    if not isinstance(model_or_factory, nn.Module):
        return None
    sizes = {
        m.ghost_batch_size for m in model_or_factory.modules() if isinstance(m, GhostBatchNorm2d)
    }
    return math.lcm(*sizes) if sizes else None


def check_ghost_batch(
    model_or_factory: nn.Module | NormFactory,
    batch_size: int,
    *,
    max_micro_batch: int | None = None,
) -> None:
    """Raise a ConfigError unless ghost batches tile a training batch of ``batch_size``.

    With gradient accumulation the batch is split into pieces of ``max_micro_batch`` (the last
    one smaller), and every piece must hold whole ghost batches too. For the trainer to call
    with each epoch's batch size before training starts.
    """
    g = ghost_batch_size_of(model_or_factory)
    if g is None:
        return
    if batch_size % g:
        raise ConfigError(
            "normalization.ghost_batch_size", g, f"does not divide the batch size {batch_size}"
        )
    if max_micro_batch is not None and max_micro_batch < batch_size and max_micro_batch % g:
        raise ConfigError(
            "max_micro_batch",
            max_micro_batch,
            f"must be a multiple of normalization.ghost_batch_size={g} to split "
            f"the batch size {batch_size}",
        )

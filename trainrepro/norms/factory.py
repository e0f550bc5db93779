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

and ``ghost_bn``, Ghost Batch Norm (Hoffer, Hubara & Soudry 2017; trainrepro/norms/ghost_bn.py):
batch norm over independent ghost batches of ``ghost_batch_size`` samples, as in Smith et al.
(2018), and ``bgn``, Batch-Group Norm (Summers & Dinneen 2020;
trainrepro/norms/batch_group_norm.py): statistics over groups of channels x groups of examples,
BN and GN at its extremes.

Every option except ``none`` also takes ``weight_standardization`` (Qiao et al. 2019;
trainrepro/norms/weight_std.py): a switch the factory carries and :func:`apply_norm_options` applies
to the built model, standardizing every conv's weight. It lives here, not in a conv option,
because WS is only defined for convs followed by a normalization layer, and is used as a pair
with one (``gn_ws``, ``bn_ws``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError
from trainrepro.norms.batch_group_norm import BatchGroupNorm2d
from trainrepro.norms.ghost_bn import GhostBatchNorm2d
from trainrepro.norms.weight_std import standardize_convs

NormFactory = Callable[[int], nn.Module]

# Module classes that count as normalization, e.g. for leaving their affine parameters out of
# weight decay. GroupNorm covers gn, ln and in as built here.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    GhostBatchNorm2d,
    BatchGroupNorm2d,
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


def _check_ws(weight_standardization: Any) -> None:
    if not isinstance(weight_standardization, bool):
        raise ConfigError(
            "normalization.weight_standardization", weight_standardization, "must be true or false"
        )


def _check_base(eps: Any, affine: Any, weight_standardization: Any) -> None:
    """The keys every option but ``none`` takes."""
    _check_eps(eps)
    _check_affine(affine)
    _check_ws(weight_standardization)


def _check_positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"normalization.{key}", value, "must be a positive integer")


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
    weight_standardization: bool = False
    sync: bool = False  # read by trainrepro.engine.distributed under torchrun

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
    weight_standardization: bool = False

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
    weight_standardization: bool = False

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
    weight_standardization: bool = False

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.GroupNorm(1, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True)
class InstanceNormFactory:
    """Instance Norm per sample and channel (Ulyanov et al. 2016), as ``GroupNorm(C, C)``."""

    eps: float = 1e-5
    affine: bool = True
    weight_standardization: bool = False

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.GroupNorm(num_channels, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True)
class BatchGroupNormFactory:
    """Makes ``BatchGroupNorm2d`` layers (Summers & Dinneen 2020)."""

    groups: int = 8
    batch_groups: int = 1
    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = True
    weight_standardization: bool = False

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return BatchGroupNorm2d(
            num_channels,
            groups=self.groups,
            batch_groups=self.batch_groups,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
        )


@dataclass(frozen=True)
class NoNormFactory:
    """Makes ``nn.Identity`` layers: the network without normalization."""

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return nn.Identity()


def _check_momentum(momentum: Any) -> None:
    if not _is_real(momentum) or not 0 < momentum <= 1:
        raise ConfigError("normalization.momentum", momentum, "must be a number in (0, 1]")


def batch_norm(
    *,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    weight_standardization: bool = False,
    sync: bool = False,
) -> NormFactory:
    """Batch Normalization (Ioffe & Szegedy, ICML 2015).

    ``momentum`` is PyTorch's: the weight of the new batch in the running statistics.
    ``sync``: under torchrun, statistics over the global batch of all ranks
    (trainrepro.engine.distributed); a single process has only its own batch, so it changes nothing.
    """
    _check_momentum(momentum)
    _check_base(eps, affine, weight_standardization)
    if not isinstance(sync, bool):
        raise ConfigError("normalization.sync", sync, "must be true or false")
    return BatchNormFactory(
        momentum=float(momentum),
        eps=float(eps),
        affine=affine,
        weight_standardization=weight_standardization,
        sync=sync,
    )


def ghost_batch_norm(
    *,
    ghost_batch_size: int = 128,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    weight_standardization: bool = False,
) -> NormFactory:
    """Ghost Batch Normalization (Hoffer, Hubara & Soudry, NeurIPS 2017).

    Training batches are normalized in independent ghost batches of ``ghost_batch_size``
    (Smith et al. 2018 use 128), which must divide every training batch and micro-batch.
    ``momentum`` is applied once per ghost batch, as if each were its own BatchNorm step.
    A ghost batch of one example has no batch statistics, so ``ghost_batch_size`` >= 2.
    """
    _check_positive_int("ghost_batch_size", ghost_batch_size)
    if ghost_batch_size == 1:
        raise ConfigError(
            "normalization.ghost_batch_size",
            ghost_batch_size,
            "a ghost batch of one example has no batch statistics; use >= 2 (or gn/ln/in/bgn)",
        )
    _check_momentum(momentum)
    _check_base(eps, affine, weight_standardization)
    return GhostBatchNormFactory(
        ghost_batch_size=ghost_batch_size,
        momentum=float(momentum),
        eps=float(eps),
        affine=affine,
        weight_standardization=weight_standardization,
    )


def group_norm(
    *,
    groups: int = 8,
    eps: float = 1e-5,
    affine: bool = True,
    weight_standardization: bool = False,
) -> NormFactory:
    """Group Normalization (Wu & He, ECCV 2018). Every normalized layer's width must be a
    multiple of ``groups``; the factory raises a ConfigError at the first one that is not."""
    _check_positive_int("groups", groups)
    _check_base(eps, affine, weight_standardization)
    return GroupNormFactory(
        groups=groups, eps=float(eps), affine=affine, weight_standardization=weight_standardization
    )


def layer_norm(
    *, eps: float = 1e-5, affine: bool = True, weight_standardization: bool = False
) -> NormFactory:
    """Layer Normalization (Ba, Kiros & Hinton 2016) over (C, H, W) of each sample."""
    _check_base(eps, affine, weight_standardization)
    return LayerNormFactory(
        eps=float(eps), affine=affine, weight_standardization=weight_standardization
    )


def instance_norm(
    *, eps: float = 1e-5, affine: bool = True, weight_standardization: bool = False
) -> NormFactory:
    """Instance Normalization (Ulyanov, Vedaldi & Lempitsky 2016) over (H, W)."""
    _check_base(eps, affine, weight_standardization)
    return InstanceNormFactory(
        eps=float(eps), affine=affine, weight_standardization=weight_standardization
    )


def batch_group_norm(
    *,
    groups: int = 8,
    batch_groups: int = 1,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    weight_standardization: bool = False,
) -> NormFactory:
    """Batch-Group Normalization (Summers & Dinneen, ICLR 2020, Sec. 3.4).

    Statistics over ``groups`` groups of channels x ``batch_groups`` groups of examples;
    ``batch_groups`` must divide every training batch and micro-batch. Evaluation uses running
    statistics, as BN (trainrepro/norms/batch_group_norm.py).
    """
    _check_positive_int("groups", groups)
    _check_positive_int("batch_groups", batch_groups)
    _check_momentum(momentum)
    _check_base(eps, affine, weight_standardization)
    return BatchGroupNormFactory(
        groups=groups,
        batch_groups=batch_groups,
        momentum=float(momentum),
        eps=float(eps),
        affine=affine,
        weight_standardization=weight_standardization,
    )


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
    "bgn": batch_group_norm,
}


def create_norm(name: str, **kwargs: Any) -> NormFactory:
    """The factory of normalization ``name`` (a conf/normalization option) with ``kwargs``."""
    if name not in NORMS:
        raise ConfigError("normalization", name, f"unknown; valid: {', '.join(NORMS)}")
    builder = NORMS[name]
    check_kwargs(builder, "normalization", kwargs)
    return builder(**kwargs)


def apply_norm_options(model: nn.Module, norm: NormFactory) -> nn.Module:
    """The post-build pass for the norm options that touch other layers: with
    ``weight_standardization``, every ``nn.Conv2d`` becomes a ``WSConv2d`` (same state dict)."""
    if getattr(norm, "weight_standardization", False):
        standardize_convs(model)
    return model

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
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from trainrepro.config import build_named
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


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _rule(ok: Callable[[Any], bool], reason: str) -> Callable[[Any], str | None]:
    return lambda value: None if ok(value) else reason


_POSITIVE_INT = _rule(_is_positive_int, "must be a positive integer")
_BOOL = _rule(lambda v: isinstance(v, bool), "must be true or false")


def _ghost_batch_size(value: Any) -> str | None:
    if _is_positive_int(value) and value == 1:
        return "a ghost batch of one example has no batch statistics; use >= 2 (or gn/ln/in/bgn)"
    return _POSITIVE_INT(value)


# Every config key of every option, in the order they are checked: what is wrong with a value
# (None when nothing is).
_KEYS: dict[str, Callable[[Any], str | None]] = {
    "ghost_batch_size": _ghost_batch_size,
    "groups": _POSITIVE_INT,
    "batch_groups": _POSITIVE_INT,
    "momentum": _rule(lambda v: _is_real(v) and 0 < v <= 1, "must be a number in (0, 1]"),
    "eps": _rule(lambda v: _is_real(v) and v > 0, "must be a number > 0"),
    "affine": _BOOL,
    "weight_standardization": _BOOL,
    "sync": _BOOL,
}


def _check_channels(num_channels: Any) -> None:
    # A model bug rather than a config value, hence not a ConfigError.
    if not isinstance(num_channels, int) or isinstance(num_channels, bool) or num_channels < 1:
        raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")


@dataclass(frozen=True, kw_only=True)
class _Factory:
    """A normalization option: its fields are its config keys (with their defaults), checked
    by ``_KEYS`` when it is created; called with a layer's channel count, it makes the layer."""

    def __post_init__(self) -> None:
        own = {f.name: f for f in fields(self)}
        for key in (k for k in _KEYS if k in own):
            value = getattr(self, key)
            reason = _KEYS[key](value)
            if reason is not None:
                raise ConfigError(f"normalization.{key}", value, reason)
            if isinstance(own[key].default, float):
                object.__setattr__(self, key, float(value))

    def __call__(self, num_channels: int) -> nn.Module:
        _check_channels(num_channels)
        return self.layer(num_channels)

    def layer(self, num_channels: int) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class _Normalized(_Factory):
    """The keys every option but ``none`` takes."""

    eps: float = 1e-5
    affine: bool = True
    weight_standardization: bool = False


@dataclass(frozen=True, kw_only=True)
class BatchNormFactory(_Normalized):
    """Batch Normalization (Ioffe & Szegedy, ICML 2015): ``BatchNorm2d`` layers.

    ``momentum`` is PyTorch's: the weight of the new batch in the running statistics.
    ``sync``: under torchrun, statistics over the global batch of all ranks
    (trainrepro.engine.distributed); a single process has only its own batch, so it changes nothing.
    """

    momentum: float = 0.1
    sync: bool = False  # read by trainrepro.engine.distributed under torchrun

    def layer(self, num_channels: int) -> nn.Module:
        return nn.BatchNorm2d(
            num_channels, eps=self.eps, momentum=self.momentum, affine=self.affine
        )


@dataclass(frozen=True, kw_only=True)
class GhostBatchNormFactory(_Normalized):
    """Ghost Batch Normalization (Hoffer, Hubara & Soudry, NeurIPS 2017): ``GhostBatchNorm2d``.

    Training batches are normalized in independent ghost batches of ``ghost_batch_size``
    (Smith et al. 2018 use 128), which must divide every training batch and micro-batch.
    ``momentum`` is applied once per ghost batch, as if each were its own BatchNorm step.
    A ghost batch of one example has no batch statistics, so ``ghost_batch_size`` >= 2.
    """

    ghost_batch_size: int = 128
    momentum: float = 0.1

    def layer(self, num_channels: int) -> nn.Module:
        return GhostBatchNorm2d(
            num_channels,
            ghost_batch_size=self.ghost_batch_size,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
        )


@dataclass(frozen=True, kw_only=True)
class GroupNormFactory(_Normalized):
    """Group Normalization (Wu & He, ECCV 2018): ``GroupNorm`` with a fixed number of groups.

    Every normalized layer's width must be a multiple of ``groups``; the factory raises a
    ConfigError at the first one that is not."""

    groups: int = 8

    def layer(self, num_channels: int) -> nn.Module:
        if num_channels % self.groups:
            raise ConfigError(
                "normalization.groups",
                self.groups,
                f"does not divide the {num_channels} channels of a layer",
            )
        return nn.GroupNorm(self.groups, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True, kw_only=True)
class LayerNormFactory(_Normalized):
    """Layer Normalization (Ba, Kiros & Hinton 2016) over (C, H, W) of each sample, as
    ``GroupNorm(1, C)``.

    GroupNorm(1, C) gives one scale and shift per channel, as the GN paper's LN baseline does,
    instead of ``nn.LayerNorm``'s per-element affine that would fix the input size.
    """

    def layer(self, num_channels: int) -> nn.Module:
        return nn.GroupNorm(1, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True, kw_only=True)
class InstanceNormFactory(_Normalized):
    """Instance Normalization (Ulyanov, Vedaldi & Lempitsky 2016) over (H, W), per sample and
    channel, as ``GroupNorm(C, C)``."""

    def layer(self, num_channels: int) -> nn.Module:
        return nn.GroupNorm(num_channels, num_channels, eps=self.eps, affine=self.affine)


@dataclass(frozen=True, kw_only=True)
class BatchGroupNormFactory(_Normalized):
    """Batch-Group Normalization (Summers & Dinneen, ICLR 2020, Sec. 3.4): ``BatchGroupNorm2d``.

    Statistics over ``groups`` groups of channels x ``batch_groups`` groups of examples;
    ``batch_groups`` must divide every training batch and micro-batch. Evaluation uses running
    statistics, as BN (trainrepro/norms/batch_group_norm.py).
    """

    groups: int = 8
    batch_groups: int = 1
    momentum: float = 0.1

    def layer(self, num_channels: int) -> nn.Module:
        return BatchGroupNorm2d(
            num_channels,
            groups=self.groups,
            batch_groups=self.batch_groups,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
        )


@dataclass(frozen=True, kw_only=True)
class NoNormFactory(_Factory):
    """No normalization: every norm layer is ``nn.Identity``."""

    def layer(self, num_channels: int) -> nn.Module:
        return nn.Identity()


# The builders the conf/normalization options name (``_target_``): each option's class, whose
# keyword-only fields are the option's keys.
batch_norm = BatchNormFactory
ghost_batch_norm = GhostBatchNormFactory
group_norm = GroupNormFactory
layer_norm = LayerNormFactory
instance_norm = InstanceNormFactory
batch_group_norm = BatchGroupNormFactory
no_norm = NoNormFactory

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
    return build_named(NORMS, "normalization", name, **kwargs)


def apply_norm_options(model: nn.Module, norm: NormFactory) -> nn.Module:
    """The post-build pass for the norm options that touch other layers: with
    ``weight_standardization``, every ``nn.Conv2d`` becomes a ``WSConv2d`` (same state dict)."""
    if getattr(norm, "weight_standardization", False):
        standardize_convs(model)
    return model

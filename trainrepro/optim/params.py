"""What every optimizer builder shares: the value checks of its keys (each error names its
``optimizer.<key>``), the parameter groups, with or without decay on norm scales and biases,
and ``option``, which declares a builder: what it constructs, its keys with their defaults and
the checks of the keys only it has. Imported by the factory and by each family's module
(adaptive, large batch, SVRG, STORM).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainrepro.errors import ConfigError, check_bool, check_number
from trainrepro.optim.norm_decay import split_norm_scales

Betas = Sequence[float]
ADAM_BETAS: tuple[float, float] = (0.9, 0.999)


def check_common(lr: float, weight_decay: float, eps: float | None = None) -> None:
    """``lr`` > 0, ``weight_decay`` >= 0 and, when given, ``eps`` > 0."""
    check_number("optimizer.lr", lr, 0.0, low_open=True)
    check_number("optimizer.weight_decay", weight_decay, 0.0)
    if eps is not None:
        check_number("optimizer.eps", eps, 0.0, low_open=True)


def check_betas(betas: Betas) -> tuple[float, float]:
    """Two numbers in [0, 1), as a tuple of floats."""
    if isinstance(betas, str | bytes) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise ConfigError("optimizer.betas", betas, "must be a list of two numbers in [0, 1)")
    for b in betas:
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0.0 <= b < 1.0:
            raise ConfigError("optimizer.betas", list(betas), "each beta must be in [0, 1)")
    return float(betas[0]), float(betas[1])


def param_groups(
    model: nn.Module,
    weight_decay: float,
    decay_norm_and_bias: bool = True,
    norm_decay_target: float = 0.0,
) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` as optimizer param groups.

    With ``decay_norm_and_bias=False`` every parameter with ndim <= 1 (biases, norm scales and
    shifts) goes into a group with weight_decay 0: decaying a norm layer's scale changes only
    the effective learning rate of the layer before it, not the function (van Laarhoven 2017,
    "L2 Regularization versus Batch and Weight Normalization"). Frozen parameters are skipped.
    A nonzero ``norm_decay_target`` puts the norm scales in a group that decays towards it
    (trainrepro/optim/norm_decay.py; sgd, adam, adamw only).
    """
    check_bool("optimizer.decay_norm_and_bias", decay_norm_and_bias)
    target = check_number("optimizer.norm_decay_target", norm_decay_target)
    if target and not decay_norm_and_bias:
        raise ConfigError(
            "optimizer.norm_decay_target",
            norm_decay_target,
            "needs decay_norm_and_bias=true (norm scales are not decayed otherwise)",
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model", type(model).__name__, "has no trainable parameters")
    if decay_norm_and_bias:
        groups = [{"params": params, "weight_decay": weight_decay, "group": "decay"}]
        return split_norm_scales(groups, model, target) if target else groups
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def closure_loss(closure: Callable[[], Any] | None) -> Any:
    """What an optimizer's ``step(closure)`` returns: the loss ``closure`` recomputes, with
    grad enabled as in torch.optim's steps, or None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# ---------------------------------------------------------------- build: checks, groups, class
# A check validates one key of a builder's options, naming it ``optimizer.<key>`` in its error,
# and returns the value to pass on. It reads the options as given, so messages show raw values.
Check = Callable[[str, Mapping[str, Any]], Any]
GroupsFn = Callable[..., list[dict[str, Any]]]


def positive(key: str, options: Mapping[str, Any]) -> float:
    return check_number(f"optimizer.{key}", options[key], 0.0, low_open=True)


def non_negative(key: str, options: Mapping[str, Any]) -> float:
    return check_number(f"optimizer.{key}", options[key], 0.0)


def unit(key: str, options: Mapping[str, Any]) -> float:
    """In [0, 1): a momentum or a decay rate of a running average."""
    return check_number(f"optimizer.{key}", options[key], 0.0, 1.0, high_open=True)


def flag(key: str, options: Mapping[str, Any]) -> bool:
    return check_bool(f"optimizer.{key}", options[key])


def optional(check: Check) -> Check:
    """``check``, with None also allowed (and passed on)."""
    return lambda key, options: None if options[key] is None else check(key, options)


def _betas(key: str, options: Mapping[str, Any]) -> tuple[float, float]:
    return check_betas(options[key])


def _nesterov(key: str, options: Mapping[str, Any]) -> bool:
    nesterov, momentum, dampening = options[key], options["momentum"], options["dampening"]
    if check_bool("optimizer.nesterov", nesterov) and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            "optimizer.nesterov",
            nesterov,
            f"needs momentum > 0 and dampening = 0 (got momentum={momentum}, "
            f"dampening={dampening})",
        )
    return nesterov


COMMON_CHECKS: dict[str, Check] = {
    "lr": positive,
    "weight_decay": non_negative,
    "eps": positive,
    "betas": _betas,
}
MOMENTUM_CHECKS: dict[str, Check] = {"momentum": unit, "dampening": unit, "nesterov": _nesterov}
GROUP_KEYS = ("decay_norm_and_bias", "norm_decay_target", "adapt_norm_and_bias")

# Keys (with their defaults) that several options declare alike.
ADAM_KEYS: dict[str, Any] = {"lr": 1e-3, "betas": ADAM_BETAS, "eps": 1e-8, "weight_decay": 0.0}
MOMENTUM_KEYS: dict[str, Any] = {"momentum": 0.9, "dampening": 0.0, "nesterov": False}
DECAY_KEYS: dict[str, Any] = {"decay_norm_and_bias": True}
NORM_TARGET_KEYS: dict[str, Any] = {**DECAY_KEYS, "norm_decay_target": 0.0}


def build(
    optimizer: Callable[..., torch.optim.Optimizer],
    options: Mapping[str, Any],
    groups: GroupsFn = param_groups,
    /,
    **checks: Check,
) -> torch.optim.Optimizer:
    """``optimizer(param groups, **keys)`` for ``options``: ``model`` and every config key.

    Checks run in the order of ``COMMON_CHECKS`` (lr, weight_decay, eps, betas), then of
    ``checks``, the option's own; an option's check replaces the common one of its key. Each
    applies only to keys the option has. The group keys (``GROUP_KEYS``) go to ``groups``,
    with the model and ``weight_decay``; every other key goes to ``optimizer``.
    """
    kwargs = dict(options)
    model = kwargs.pop("model")
    for key, check in {**COMMON_CHECKS, **checks}.items():
        if key in options:
            kwargs[key] = check(key, options)
    group_keys = {k: kwargs.pop(k) for k in GROUP_KEYS if k in kwargs}
    return optimizer(groups(model, kwargs["weight_decay"], **group_keys), **kwargs)


Builder = Callable[..., torch.optim.Optimizer]


def option(
    optimizer: Callable[..., torch.optim.Optimizer],
    keys: Mapping[str, Any],
    groups: GroupsFn = param_groups,
    /,
    **checks: Check,
) -> Callable[[Callable[[], None]], Builder]:
    """Decorate a stub (its name and docstring) into the builder of one optimizer option:
    ``builder(model, *, <keys>)``, the config ``keys`` keyword-only with their defaults, in
    order; ``trainrepro.config.check_kwargs`` holds a config against that signature, and a
    call with any other key is a TypeError. The builder returns ``build(optimizer, ...)``
    with ``groups`` and ``checks``, the checks of the keys that only this option has.
    """
    signature = inspect.Signature(
        [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in keys.items()]
    )

    def decorate(stub: Callable[[], None]) -> Builder:
        def builder(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return build(optimizer, bound.arguments, groups, **checks)

        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(builder, attr, getattr(stub, attr))
        builder.__signature__ = signature  # type: ignore[attr-defined]
        return builder

    return decorate

"""What every optimizer builder shares: the value checks of its common keys (each error names
its ``optimizer.<key>``) and the parameter groups, with or without decay on norm scales and
biases. Imported by the factory and by each family's module (adaptive, large batch, SVRG, STORM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def check_momentum(momentum: float, dampening: float, nesterov: bool) -> None:
    """SGD's momentum keys (shared by ``sgd`` and ``lars``)."""
    check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    check_number("optimizer.dampening", dampening, 0.0, 1.0, high_open=True)
    if check_bool("optimizer.nesterov", nesterov) and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            "optimizer.nesterov",
            nesterov,
            f"needs momentum > 0 and dampening = 0 (got momentum={momentum}, "
            f"dampening={dampening})",
        )


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

"""Optimizer builders: one flat, validated function per ``conf/optimizer/<name>.yaml``.

Every builder takes the model as its one positional argument and wraps torch's own
implementation (default ``foreach``), except ``radam`` and ``adam_2k``, which build our
implementations of Liu et al. (2020) in ``trainrepro.adaptive``. ``weight_decay`` means an L2
term added to the gradient (``g += wd * p``, "coupled") for every option except ``adamw``,
where it is decoupled from the gradient (Loshchilov & Hutter 2019, "Decoupled Weight Decay
Regularization": ``p -= lr * wd * p``); ``adam``, ``adam_eps``, ``adam_2k``, ``radam`` and
``nadam`` can switch to decoupled decay with ``decoupled_weight_decay``. ``sgd``, ``adam`` (and
``adam_warmup``) and ``adamw`` take ``norm_decay_target``: norm scales decay towards it, e.g. 1
(trainrepro/norm_decay.py); the other builders do not accept the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from trainrepro.adaptive import RHO_THRESHOLD, RAdam, adam_2k, adam_eps, rho_inf
from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError, check_bool, check_number
from trainrepro.norm_decay import attach_decay_target, split_norm_scales

Betas = Sequence[float]
ADAM_BETAS: tuple[float, float] = (0.9, 0.999)


# ---------------------------------------------------------------- value checks
def _check_common(lr: float, weight_decay: float, eps: float | None = None) -> None:
    check_number("optimizer.lr", lr, 0.0, low_open=True)
    check_number("optimizer.weight_decay", weight_decay, 0.0)
    if eps is not None:
        check_number("optimizer.eps", eps, 0.0, low_open=True)


def _check_betas(betas: Betas) -> tuple[float, float]:
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


# ---------------------------------------------------------------- parameter groups
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
    (trainrepro/norm_decay.py; sgd, adam, adamw only).
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


# ---------------------------------------------------------------- builders
def sgd(
    model: nn.Module,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    decay_norm_and_bias: bool = True,
    norm_decay_target: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD with heavy-ball or Nesterov momentum (Sutskever et al. 2013); L2 weight decay
    (towards ``norm_decay_target`` for norm scales)."""
    _check_common(lr, weight_decay)
    check_momentum(momentum, dampening, nesterov)
    groups = param_groups(model, weight_decay, decay_norm_and_bias, norm_decay_target)
    opt = torch.optim.SGD(
        groups,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )
    return attach_decay_target(opt, decoupled=False)


def adam(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    betas: Betas = ADAM_BETAS,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    decay_norm_and_bias: bool = True,
    norm_decay_target: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015), AMSGrad variant (Reddi et al. 2018); L2 weight decay, or
    decoupled with ``decoupled_weight_decay`` (then torch's AdamW, the same as ``adamw``)."""
    _check_common(lr, weight_decay, eps)
    b = _check_betas(betas)
    check_bool("optimizer.amsgrad", amsgrad)
    check_bool("optimizer.decoupled_weight_decay", decoupled_weight_decay)
    groups = param_groups(model, weight_decay, decay_norm_and_bias, norm_decay_target)
    cls = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
    opt = cls(groups, lr=lr, betas=b, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    return attach_decay_target(opt, decoupled=decoupled_weight_decay)


def adamw(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    betas: Betas = ADAM_BETAS,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    amsgrad: bool = False,
    decay_norm_and_bias: bool = True,
    norm_decay_target: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    torch multiplies the decay by the current lr: ``p -= lr * weight_decay * p`` before the
    Adam step. The paper's decay ``eta_t * lambda`` uses the schedule multiplier ``eta_t``
    only, so the paper's ``lambda`` equals ``lr * weight_decay`` at the base lr here.
    """
    _check_common(lr, weight_decay, eps)
    b = _check_betas(betas)
    check_bool("optimizer.amsgrad", amsgrad)
    groups = param_groups(model, weight_decay, decay_norm_and_bias, norm_decay_target)
    opt = torch.optim.AdamW(
        groups, lr=lr, betas=b, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
    )
    return attach_decay_target(opt, decoupled=True)


def radam(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    betas: Betas = ADAM_BETAS,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    rho_threshold: float = RHO_THRESHOLD,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """Rectified Adam (Liu et al. 2020), our implementation (``trainrepro.adaptive.RAdam``)."""
    _check_common(lr, weight_decay, eps)
    b = _check_betas(betas)
    check_bool("optimizer.decoupled_weight_decay", decoupled_weight_decay)
    check_number("optimizer.rho_threshold", rho_threshold, 4.0)  # r_t is imaginary below 4
    if rho_threshold >= rho_inf(b[1]):
        raise ConfigError(
            "optimizer.rho_threshold",
            rho_threshold,
            f"must be < rho_inf = 2/(1-beta2)-1 = {rho_inf(b[1]):g}, or no step is adaptive",
        )
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return RAdam(
        groups,
        lr=lr,
        betas=b,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        rho_threshold=float(rho_threshold),
    )


def nadam(
    model: nn.Module,
    *,
    lr: float = 2e-3,
    betas: Betas = ADAM_BETAS,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """Adam with Nesterov momentum (Dozat 2016, "Incorporating Nesterov Momentum into Adam")."""
    _check_common(lr, weight_decay, eps)
    b = _check_betas(betas)
    check_number("optimizer.momentum_decay", momentum_decay, 0.0)
    check_bool("optimizer.decoupled_weight_decay", decoupled_weight_decay)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.NAdam(
        groups,
        lr=lr,
        betas=b,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled_weight_decay,
    )


def adagrad(
    model: nn.Module,
    *,
    lr: float = 0.01,
    lr_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """AdaGrad (Duchi, Hazan & Singer 2011); no momentum."""
    _check_common(lr, weight_decay, eps)
    check_number("optimizer.lr_decay", lr_decay, 0.0)
    check_number("optimizer.initial_accumulator_value", initial_accumulator_value, 0.0)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.Adagrad(
        groups,
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
    )


def rmsprop(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """RMSprop (Tieleman & Hinton 2012, lecture 6.5); centered variant of Graves 2013."""
    _check_common(lr, weight_decay, eps)
    check_number("optimizer.alpha", alpha, 0.0, 1.0, high_open=True)
    check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    check_bool("optimizer.centered", centered)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.RMSprop(
        groups,
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
    )


def adadelta(
    model: nn.Module,
    *,
    lr: float = 1.0,
    rho: float = 0.95,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """ADADELTA (Zeiler 2012); the paper has no lr, which lr=1 reproduces."""
    _check_common(lr, weight_decay, eps)
    check_number("optimizer.rho", rho, 0.0, 1.0, high_open=True)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.Adadelta(groups, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def adamax(
    model: nn.Module,
    *,
    lr: float = 2e-3,
    betas: Betas = ADAM_BETAS,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """AdaMax, Adam with the infinity norm (Kingma & Ba 2015, Sec. 7.1)."""
    _check_common(lr, weight_decay, eps)
    b = _check_betas(betas)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.Adamax(groups, lr=lr, betas=b, eps=eps, weight_decay=weight_decay)


OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "sgd": sgd,
    "adam": adam,
    "adam_eps": adam_eps,  # Liu et al. 2020's Adam-eps; these two live in trainrepro.adaptive
    "adam_2k": adam_2k,
    "adam_warmup": adam,  # Adam; its conf file also sets the schedule's warmup_steps
    "adamw": adamw,
    "radam": radam,
    "nadam": nadam,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adadelta": adadelta,
    "adamax": adamax,
}


def optimizers() -> dict[str, OptimizerBuilder]:
    """Every optimizer option, this module's and those that build on it (imported here, as
    they import this module): SVRG and STORM (variance reduction), LARS and LAMB (large batch)."""
    from trainrepro.large_batch import lamb, lars
    from trainrepro.storm import storm
    from trainrepro.svrg import svrg

    return {**OPTIMIZERS, "svrg": svrg, "storm": storm, "lars": lars, "lamb": lamb}


def create_optimizer(name: str, model: nn.Module, **kwargs: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` for ``model`` from Python (the CLI goes through the YAML)."""
    registry = optimizers()
    if name not in registry:
        raise ConfigError("optimizer", name, f"unknown; valid: {', '.join(sorted(registry))}")
    builder = registry[name]
    check_kwargs(builder, "optimizer", kwargs)
    return builder(model, **kwargs)


# ---------------------------------------------------------------- runtime knobs for schedules
def get_momentum(opt: torch.optim.Optimizer) -> float | None:
    """The first group's momentum (SGD/RMSprop ``momentum``, Adam family ``betas[0]``)."""
    group = opt.param_groups[0]
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def set_momentum(opt: torch.optim.Optimizer, m: float) -> None:
    """Set momentum in every group; a no-op for optimizers without one (AdaGrad, ADADELTA)."""
    check_number("optimizer.momentum", m, 0.0, 1.0, high_open=True)
    for group in opt.param_groups:
        if "betas" in group:
            group["betas"] = (m, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = m
            if isinstance(opt, torch.optim.RMSprop) and m > 0:
                _ensure_rmsprop_buffers(opt, group)


def _ensure_rmsprop_buffers(opt: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    # torch's RMSprop only creates momentum buffers at a parameter's first step, and only when
    # momentum > 0 then; turning momentum on later would raise KeyError at the next step.
    for p in group["params"]:
        state = opt.state.get(p)
        if state and "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every group (0 is allowed: warmup and cosine reach it)."""
    check_number("optimizer.lr", lr, 0.0)
    for group in opt.param_groups:
        group["lr"] = lr

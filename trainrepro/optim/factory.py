"""Optimizer builders: one flat, validated function per ``conf/optimizer/<name>.yaml``.

Every builder takes the model as its one positional argument and wraps torch's own
implementation (default ``foreach``), except ``radam`` and ``adam_2k``, which build our
implementations of Liu et al. (2020) in ``trainrepro.optim.adaptive``. ``weight_decay`` means an L2
term added to the gradient (``g += wd * p``, "coupled") for every option except ``adamw``,
where it is decoupled from the gradient (Loshchilov & Hutter 2019, "Decoupled Weight Decay
Regularization": ``p -= lr * wd * p``); ``adam``, ``adam_eps``, ``adam_2k``, ``radam`` and
``nadam`` can switch to decoupled decay with ``decoupled_weight_decay``. ``sgd``, ``adam`` (and
``adam_warmup``) and ``adamw`` take ``norm_decay_target``: norm scales decay towards it, e.g. 1
(trainrepro/optim/norm_decay.py); the other builders do not accept the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError, check_bool, check_number
from trainrepro.optim.adaptive import RHO_THRESHOLD, RAdam, adam_2k, rho_inf
from trainrepro.optim.large_batch import lamb, lars
from trainrepro.optim.norm_decay import attach_decay_target
from trainrepro.optim.params import (
    ADAM_BETAS,
    Betas,
    check_betas,
    check_common,
    check_momentum,
    param_groups,
)
from trainrepro.optim.storm import storm
from trainrepro.optim.svrg import svrg


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
    check_common(lr, weight_decay)
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
    check_common(lr, weight_decay, eps)
    b = check_betas(betas)
    check_bool("optimizer.amsgrad", amsgrad)
    check_bool("optimizer.decoupled_weight_decay", decoupled_weight_decay)
    groups = param_groups(model, weight_decay, decay_norm_and_bias, norm_decay_target)
    cls = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
    opt = cls(groups, lr=lr, betas=b, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    return attach_decay_target(opt, decoupled=decoupled_weight_decay)


def adam_eps(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-4,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """Adam-eps (Liu et al. 2020, Sec. 3.1): the ``adam`` option with eps 1e-4 instead of 1e-8,
    which bounds the adaptive rate by 1/eps and so reduces its variance."""
    return adam(
        model,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        amsgrad=amsgrad,
        decay_norm_and_bias=decay_norm_and_bias,
    )


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
    check_common(lr, weight_decay, eps)
    b = check_betas(betas)
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
    """Rectified Adam (Liu et al. 2020), ours (``trainrepro.optim.adaptive.RAdam``)."""
    check_common(lr, weight_decay, eps)
    b = check_betas(betas)
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
    check_common(lr, weight_decay, eps)
    b = check_betas(betas)
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
    check_common(lr, weight_decay, eps)
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
    check_common(lr, weight_decay, eps)
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
    check_common(lr, weight_decay, eps)
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
    check_common(lr, weight_decay, eps)
    b = check_betas(betas)
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.Adamax(groups, lr=lr, betas=b, eps=eps, weight_decay=weight_decay)


OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "sgd": sgd,
    "adam": adam,
    "adam_eps": adam_eps,  # Liu et al. 2020: Adam with eps 1e-4; Adam-2k is in adaptive.py
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
    """Every optimizer option: this module's and the families' (SVRG and STORM for variance
    reduction, LARS and LAMB for large batches)."""
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

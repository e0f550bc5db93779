"""Optimizer builders: one flat, validated function per ``conf/optimizer/<name>.yaml``.

Every builder takes the model as its one positional argument and wraps torch's own
implementation (default ``foreach``), except ``radam`` and ``adam_2k``, which build our
implementations of Liu et al. (2020) in ``trainrepro.optim.adaptive``, and ``sgdw``, ours
(``trainrepro.optim.decoupled``). ``weight_decay`` means an L2 term added to the gradient
(``g += wd * p``, "coupled") for every option except ``adamw`` and ``sgdw``, where it is
decoupled from the gradient (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization":
``p -= lr * wd * p``, or with ``decay_scale=schedule`` the paper's ``p -= lr/base_lr * wd * p``,
sgdw's default; trainrepro/optim/decoupled.py); ``adam``, ``adam_eps``, ``adam_2k``, ``radam``
and ``nadam`` can switch to torch's decoupled decay with ``decoupled_weight_decay``. ``sgd``,
``sgdw``, ``adam`` (and ``adam_warmup``) and ``adamw`` take ``norm_decay_target``: norm scales
decay towards it, e.g. 1 (trainrepro/optim/norm_decay.py); the other builders do not accept
the key.

A builder is one ``@option`` entry (trainrepro/optim/params.py): what it constructs, its config
keys in signature order with their defaults (which conf/optimizer/<name>.yaml repeats), and the
checks of the keys only it has; a stub gives its name and docstring. The checks of lr,
weight_decay, eps and betas and the param groups are shared. A new option is one entry here,
registered in ``OPTIMIZERS``, and its YAML file.

Kernels: the torch classes run their ``foreach`` (multi-tensor) step wherever torch picks it by
default, which is when every parameter is on CUDA; on the CPU they loop over the parameters.
``fused`` (sgd, adam, adam_eps, adam_warmup, adamw, adagrad: the classes torch has a fused
kernel for) passes torch's switch through: null leaves torch's default (not fused), true
runs one fused kernel per device and dtype, which also lets fp16's GradScaler skip its
per-step host read. It computes the same update to float32 rounding
(tests/test_optim_kernels.py), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError, check_number
from trainrepro.optim.adaptive import RHO_THRESHOLD, RAdam, adam_2k, rho_inf
from trainrepro.optim.decoupled import (
    decay_scale,
    sgdw,
    weight_decay_norm,
    with_decoupled_decay,
)
from trainrepro.optim.large_batch import lamb, lars
from trainrepro.optim.norm_decay import attach_decay_target
from trainrepro.optim.params import (
    ADAM_KEYS,
    DECAY_KEYS,
    MOMENTUM_CHECKS,
    MOMENTUM_KEYS,
    NORM_TARGET_KEYS,
    flag,
    non_negative,
    option,
    unit,
)
from trainrepro.optim.params import param_groups as param_groups  # re-exported
from trainrepro.optim.storm import storm
from trainrepro.optim.svrg import svrg


def _decay_target(cls: type[torch.optim.Optimizer], *, decoupled: bool) -> Callable[..., Any]:
    """``cls``, with the hook that decays norm scales towards ``norm_decay_target``."""
    return lambda params, **kw: attach_decay_target(cls(params, **kw), decoupled=decoupled)


def _adam(params: Any, *, decoupled_weight_decay: bool, **kwargs: Any) -> torch.optim.Optimizer:
    """torch's Adam, or its AdamW with ``decoupled_weight_decay``."""
    cls = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
    return attach_decay_target(cls(params, **kwargs), decoupled=decoupled_weight_decay)


def _rho_threshold(key: str, options: Mapping[str, Any]) -> float:
    threshold = check_number("optimizer.rho_threshold", options[key], 4.0)  # r_t imaginary < 4
    beta2 = options["betas"][1]  # already checked: betas come first
    if threshold >= rho_inf(beta2):
        raise ConfigError(
            "optimizer.rho_threshold",
            options[key],
            f"must be < rho_inf = 2/(1-beta2)-1 = {rho_inf(beta2):g}, or no step is adaptive",
        )
    return threshold


# ---------------------------------------------------------------- builders
_ADAM_FLAGS = {"decoupled_weight_decay": False, "amsgrad": False}
FUSED = {"fused": None}  # torch's switch, for the classes that have a fused kernel


def _fused(key: str, options: Mapping[str, Any]) -> bool | None:
    value = options[key]
    if value is not None and not isinstance(value, bool):
        raise ConfigError("optimizer.fused", value, "must be true, false or null (torch's default)")
    return value


@option(
    _decay_target(torch.optim.SGD, decoupled=False),
    {"lr": 0.1, **MOMENTUM_KEYS, "weight_decay": 5e-4, **NORM_TARGET_KEYS, **FUSED},
    **MOMENTUM_CHECKS,
    fused=_fused,
)
def sgd() -> None:
    """SGD with heavy-ball or Nesterov momentum (Sutskever et al. 2013); L2 weight decay
    (towards ``norm_decay_target`` for norm scales)."""


@option(
    _adam,
    {**ADAM_KEYS, **_ADAM_FLAGS, **NORM_TARGET_KEYS, **FUSED},
    amsgrad=flag,
    decoupled_weight_decay=flag,
    fused=_fused,
)
def adam() -> None:
    """Adam (Kingma & Ba 2015), AMSGrad variant (Reddi et al. 2018); L2 weight decay, or
    decoupled with ``decoupled_weight_decay`` (then torch's AdamW, the same as ``adamw``)."""


@option(
    _adam,
    {**ADAM_KEYS, "eps": 1e-4, **_ADAM_FLAGS, **DECAY_KEYS, **FUSED},
    amsgrad=flag,
    decoupled_weight_decay=flag,
    fused=_fused,
)
def adam_eps() -> None:
    """Adam-eps (Liu et al. 2020, Sec. 3.1): the ``adam`` option with eps 1e-4 instead of 1e-8,
    which bounds the adaptive rate by 1/eps and so reduces its variance."""


ADAMW_WEIGHT_DECAY = 0.01  # torch's default


@option(
    with_decoupled_decay(torch.optim.AdamW),
    {
        **ADAM_KEYS,
        "weight_decay": ADAMW_WEIGHT_DECAY,
        "decay_scale": "lr",
        "weight_decay_norm": None,
        "amsgrad": False,
        **NORM_TARGET_KEYS,
        **FUSED,
    },
    decay_scale=decay_scale,
    weight_decay_norm=weight_decay_norm(ADAMW_WEIGHT_DECAY),
    amsgrad=flag,
    fused=_fused,
)
def adamw() -> None:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), torch's AdamW.

    ``decay_scale=lr`` (default): torch's form, ``p -= lr_t * weight_decay * p`` before the
    Adam step, so the paper's ``lambda`` equals ``lr * weight_decay`` at the base lr.
    ``decay_scale=schedule``: the paper's Algorithm 2, ``p -= eta_t * weight_decay * p`` with
    ``eta_t = lr_t / lr``, run as torch's AdamW with ``weight_decay / lr``
    (trainrepro/optim/decoupled.py).
    """


@option(
    RAdam,
    {**ADAM_KEYS, "decoupled_weight_decay": False, "rho_threshold": RHO_THRESHOLD, **DECAY_KEYS},
    decoupled_weight_decay=flag,
    rho_threshold=_rho_threshold,
)
def radam() -> None:
    """Rectified Adam (Liu et al. 2020), ours (``trainrepro.optim.adaptive.RAdam``)."""


@option(
    torch.optim.NAdam,
    {
        **ADAM_KEYS,
        "lr": 2e-3,
        "momentum_decay": 4e-3,
        "decoupled_weight_decay": False,
        **DECAY_KEYS,
    },
    momentum_decay=non_negative,
    decoupled_weight_decay=flag,
)
def nadam() -> None:
    """Adam with Nesterov momentum (Dozat 2016, "Incorporating Nesterov Momentum into Adam")."""


@option(
    torch.optim.Adagrad,
    {
        "lr": 0.01,
        "lr_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
        "weight_decay": 0.0,
        **DECAY_KEYS,
        **FUSED,
    },
    lr_decay=non_negative,
    initial_accumulator_value=non_negative,
    fused=_fused,
)
def adagrad() -> None:
    """AdaGrad (Duchi, Hazan & Singer 2011); no momentum."""


@option(
    torch.optim.RMSprop,
    {
        "lr": 1e-3,
        "alpha": 0.99,
        "eps": 1e-8,
        "momentum": 0.0,
        "centered": False,
        "weight_decay": 0.0,
        **DECAY_KEYS,
    },
    alpha=unit,
    momentum=unit,
    centered=flag,
)
def rmsprop() -> None:
    """RMSprop (Tieleman & Hinton 2012, lecture 6.5); centered variant of Graves 2013."""


@option(
    torch.optim.Adadelta,
    {"lr": 1.0, "rho": 0.95, "eps": 1e-6, "weight_decay": 0.0, **DECAY_KEYS},
    rho=unit,
)
def adadelta() -> None:
    """ADADELTA (Zeiler 2012); the paper has no lr, which lr=1 reproduces."""


@option(torch.optim.Adamax, {**ADAM_KEYS, "lr": 2e-3, **DECAY_KEYS})
def adamax() -> None:
    """AdaMax, Adam with the infinity norm (Kingma & Ba 2015, Sec. 7.1)."""


OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "sgd": sgd,
    "sgdw": sgdw,  # SGD with decoupled weight decay; in decoupled.py
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

"""Decoupled weight decay as Loshchilov & Hutter (ICLR 2019, "Decoupled Weight Decay
Regularization", arXiv:1711.05101) define it: SGDW, the decay scale of ``sgdw`` and ``adamw``,
and the paper's normalized weight decay.

The paper multiplies the decay by the schedule multiplier eta_t only, never by the base lr
alpha: Algorithm 1 (SGDW) ends with theta_t = theta_{t-1} - m_t - eta_t lambda theta_{t-1},
Algorithm 2 (AdamW) with theta_t = theta_{t-1} - eta_t (alpha m_hat / (sqrt(v_hat) + eps)
+ lambda theta_{t-1}); the official code (github.com/loshchil/AdamW-and-SGDW, train.lua) sets
the decay of each batch to (lr_t / LR) * lambda. torch's AdamW multiplies by the current lr,
p -= lr_t * wd * p, so its wd is the paper's lambda / alpha. ``decay_scale`` picks one:

* ``lr``:       per update, the weights shrink by lr_t * weight_decay (torch's AdamW);
* ``schedule``: by eta_t * weight_decay, eta_t = lr_t / ``optimizer.lr`` (the paper's lambda).

Both options run on torch's convention, p -= lr_t * wd * p on the pre-step weights; with
``schedule`` the builder hands the optimizer wd = weight_decay / lr, so lr_t * wd = eta_t *
lambda (the same to float rounding), and torch's AdamW kernels (foreach, fused) keep working.
eta_t is lr_t over the configured lr, so whatever the schedule does to the lr (warmup, decay,
restarts, ``scale_lr_with_batch``) it does to the decay too.

Normalized weight decay (the paper's lambda = lambda_norm sqrt(b / (B T)): b the batch size,
B the training examples, T the epochs) needs b, B and T, which only the run knows:
``weight_decay_norm`` marks the decayed groups, and ``normalize_weight_decay`` sets their decay
once the data is read (trainrepro.engine.build.make_optimizer_and_schedule); until then the
optimizer refuses to step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from trainrepro.errors import ConfigError, check_number
from trainrepro.optim.norm_decay import attach_decay_target
from trainrepro.optim.params import (
    MOMENTUM_CHECKS,
    MOMENTUM_KEYS,
    NORM_TARGET_KEYS,
    closure_loss,
    option,
)

DECAY_SCALES = ("lr", "schedule")


def normalized_weight_decay(
    weight_decay_norm: float, batch_size: int, train_size: int, epochs: int
) -> float:
    """lambda = lambda_norm * sqrt(b / (B * T)), the paper's normalized weight decay: the
    total decay over a run of B/b updates per epoch for T epochs stays that of lambda_norm
    whatever b, B and T. (The official code divides by sqrt(batches per epoch * T_e), T_e the
    current restart period; for a run without restarts that is this, with B/b rounded up.)"""
    return weight_decay_norm * math.sqrt(batch_size / (train_size * epochs))


class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 1).

    Per parameter, at an update with learning rate lr_t (g the gradient, no decay in it):
        v = g at the first update, else v = momentum * v + (1 - dampening) * g
        d = g + momentum * v with ``nesterov``, else d = v
        theta = theta - lr_t * d - lr_t * weight_decay * theta_old

    which is torch.optim.SGD at weight_decay 0 plus the decay of the pre-step weights, scaled
    as torch's AdamW scales it (by lr_t; the ``sgdw`` builder passes weight_decay / lr, so the
    decay is eta_t * lambda). This is the official code's form (UPDATETORCHFILES/sgd.lua,
    sgd_type 1: torch's buffer, then x -= weightDecaycurrent * xold). Algorithm 1 puts the
    rate inside the buffer instead, m_t = beta1 m_{t-1} + eta_t alpha g_t, theta_t =
    theta_{t-1} - m_t - eta_t lambda theta_{t-1} (its lines 8-9): the same while lr_t is
    constant; when it changes, the code's buffer carries past gradients at today's rate, the
    algorithm's at the rates they were taken with. We follow the code, which produced the
    paper's results and makes ``sgdw`` at weight_decay 0 exactly our ``sgd``.

    One loop over the parameters (no foreach or fused kernel: torch's have no decoupled decay).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        # Plain ValueErrors for direct use, like torch.optim; the builder raises ConfigError first.
        if not lr >= 0.0 or not 0.0 <= momentum < 1.0 or not weight_decay >= 0.0:
            raise ValueError(f"Invalid lr {lr}, momentum {momentum} or weight_decay {weight_decay}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, m = group["lr"], group["momentum"]
            shrink = 1.0 - lr * group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SGDW does not support sparse gradients")
                d = p.grad
                if m:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # torch's SGD: the first buffer is the gradient itself
                        buf = state["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(m).add_(d, alpha=1.0 - group["dampening"])
                    d = d.add(buf, alpha=m) if group["nesterov"] else buf
                if shrink != 1.0:
                    p.mul_(shrink)  # theta_old: the step below reads the gradient only
                p.add_(d, alpha=-lr)
        return loss


# ---------------------------------------------------------------- the builders' parts
def _refuse_unset_decay(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if any(math.isnan(g["weight_decay"]) for g in opt.param_groups):
        raise RuntimeError(
            "optimizer.weight_decay_norm is set but the decay it gives is not: call "
            "trainrepro.optim.decoupled.normalize_weight_decay(optimizer, batch_sizes, "
            "train_size) first (the trainer does)"
        )


def with_decoupled_decay(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """``cls`` (torch's AdamW, or SGDW) built from our keys: the decay scaled per
    ``decay_scale``, norm scales decayed towards ``norm_decay_target``, and the groups a
    ``weight_decay_norm`` will set marked (their weight_decay NaN until it is set)."""

    def build(
        groups: list[dict[str, Any]],
        *,
        lr: float,
        weight_decay: float,
        decay_scale: str,
        weight_decay_norm: float | None,
        **kwargs: Any,
    ) -> torch.optim.Optimizer:
        per_lr = 1.0 / lr if decay_scale == "schedule" else 1.0  # lr_t * lambda / alpha
        for g in groups:
            g["weight_decay"] *= per_lr
        opt = cls(groups, lr=lr, weight_decay=weight_decay * per_lr, **kwargs)
        if weight_decay_norm is not None:
            for g in opt.param_groups:
                if g["group"] != "no_decay":
                    g["weight_decay"], g["weight_decay_norm"] = math.nan, weight_decay_norm
            opt.register_step_pre_hook(_refuse_unset_decay)
        return attach_decay_target(opt, decoupled=True)

    return build


def decay_scale(key: str, options: Mapping[str, Any]) -> str:
    value = options[key]
    if not isinstance(value, str) or value not in DECAY_SCALES:
        raise ConfigError(
            "optimizer.decay_scale",
            value,
            "must be lr (decay x current lr, torch's AdamW) or schedule (decay x lr/base lr, "
            "the paper's)",
        )
    return value


def weight_decay_norm(default: float) -> Callable[[str, Mapping[str, Any]], float | None]:
    """The check of ``weight_decay_norm``: null, or a number >= 0 that replaces a
    ``weight_decay`` left at its ``default`` and needs ``decay_scale=schedule``."""

    def check(key: str, options: Mapping[str, Any]) -> float | None:
        value = options[key]
        if value is None:
            return None
        norm = check_number("optimizer.weight_decay_norm", value, 0.0)
        if options["decay_scale"] != "schedule":
            raise ConfigError(
                "optimizer.weight_decay_norm",
                value,
                "needs decay_scale=schedule (the paper's normalized lambda is scaled by the "
                "schedule only)",
            )
        if options["weight_decay"] != default:
            raise ConfigError(
                "optimizer.weight_decay",
                options["weight_decay"],
                f"set weight_decay or weight_decay_norm={value}, not both (weight_decay_norm "
                f"derives it; leave weight_decay at {default:g})",
            )
        return norm

    return check


def normalize_weight_decay(
    optimizer: torch.optim.Optimizer, batch_sizes: Sequence[int], train_size: int
) -> str | None:
    """Set the decay of the groups ``weight_decay_norm`` marked: lambda from b (the batch size
    of every epoch, ``batch_sizes``, which must be one), B = ``train_size`` and T =
    len(batch_sizes), handed to the optimizer as lambda / lr (``decay_scale=schedule``).
    Returns a note saying what was derived, or None when no group is marked."""
    norms = {g["weight_decay_norm"] for g in optimizer.param_groups if "weight_decay_norm" in g}
    if not norms:
        return None
    (norm,) = norms
    if len(set(batch_sizes)) != 1:
        raise ConfigError(
            "optimizer.weight_decay_norm",
            norm,
            "needs one batch size for the whole run (b of sqrt(b/(B*T))); the schedule uses "
            + ", ".join(str(b) for b in sorted(set(batch_sizes))),
        )
    b, epochs = batch_sizes[0], len(batch_sizes)
    decay = normalized_weight_decay(norm, b, train_size, epochs)
    for g in optimizer.param_groups:
        if "weight_decay_norm" in g:
            g["weight_decay"] = decay / optimizer.defaults["lr"]
    return (
        f"optimizer.weight_decay_norm={norm:g}: weight_decay = {norm:g} * sqrt({b}/({train_size}"
        f"*{epochs})) = {decay:.4g} per update, times lr/base lr"
    )


# ---------------------------------------------------------------- the sgdw option
SGDW_WEIGHT_DECAY = 5e-4


@option(
    with_decoupled_decay(SGDW),
    {
        "lr": 0.1,
        **MOMENTUM_KEYS,
        "weight_decay": SGDW_WEIGHT_DECAY,
        "decay_scale": "schedule",
        "weight_decay_norm": None,
        **NORM_TARGET_KEYS,
    },
    **MOMENTUM_CHECKS,
    decay_scale=decay_scale,
    weight_decay_norm=weight_decay_norm(SGDW_WEIGHT_DECAY),
)
def sgdw() -> None:
    """SGDW (Loshchilov & Hutter 2019, Algorithm 1 as their code runs it): SGD with momentum
    and decoupled weight decay, eta_t * weight_decay per update (``decay_scale=schedule``)."""

"""Layer-wise adaptive optimizers for large batches: LARS and LAMB.

LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks",
arXiv:1708.03888, eq. 6 and Algorithm 1) scales each layer's step by the trust ratio
``eta * ||w|| / (||g|| + wd * ||w||)``; LAMB (You et al. 2020, "Large Batch Optimization for
Deep Learning: Training BERT in 76 Minutes", ICLR, Algorithm 2) scales Adam's update, decay
included, by ``||w|| / ||update||``. A "layer" is one parameter tensor, as in the papers' and
timm's code. Parameters with ndim <= 1 (biases, norm scales and shifts) are excluded from both
the adaptation and the decay by default (``adapt_norm_and_bias``, ``decay_norm_and_bias``), as
in timm and the MLPerf LARS reference: their norms say nothing about a layer's scale.

Where the paper leaves a choice open we take timm's (timm/optim/lars.py, lamb.py, v1.0.31),
so that ``tests/test_large_batch.py`` can compare step by step:

- LARS applies the global lr outside the momentum buffer, as torch.optim.SGD does:
  ``v = m v + ratio (g + wd w); w -= lr v``. Algorithm 1 puts it inside,
  ``v = m v + lr ratio (g + wd w); w -= v``. The two are equal while lr is constant and differ
  only in how a changing lr treats past velocity; ours makes LARS with every ratio at 1
  exactly our ``sgd`` option, so a comparison isolates the trust ratio.
- The ratio is 1 where ``||w||`` or ``||g||`` (LAMB: ``||update||``) is 0 (a zero-initialized
  tensor still moves); LARS adds ``eps`` to the ratio's denominator (the paper has none: 0).
- Trust clipping (LARC, NVIDIA apex/parallel/LARC.py): LARS's ratio becomes
  ``min(ratio / lr, 1)``, i.e. the layer's rate ``min(lr * ratio, lr)`` after the global lr;
  LAMB's becomes ``min(ratio, 1)`` (timm's LAMBC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from trainrepro.errors import check_bool
from trainrepro.optim.params import (
    ADAM_BETAS,
    ADAM_KEYS,
    MOMENTUM_CHECKS,
    MOMENTUM_KEYS,
    closure_loss,
    flag,
    non_negative,
    option,
    optional,
    param_groups,
    positive,
)

Closure = Callable[[], torch.Tensor] | None


def _norm_ratio(w_norm: torch.Tensor, d_norm: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``ratio``, or 1 where either norm is 0 (timm's rule)."""
    one = torch.ones_like(ratio)
    return torch.where((w_norm > 0) & (d_norm > 0), ratio, one)


def layer_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool, adapt_norm_and_bias: bool
) -> list[dict[str, Any]]:
    """Param groups with an ``adapt`` flag: tensors with ndim > 1 are decayed and adapted;
    those with ndim <= 1 only when ``decay_norm_and_bias`` / ``adapt_norm_and_bias``."""
    check_bool("optimizer.decay_norm_and_bias", decay_norm_and_bias)
    check_bool("optimizer.adapt_norm_and_bias", adapt_norm_and_bias)
    groups = param_groups(model, weight_decay, False)  # split by ndim: "decay" / "no_decay"
    for g in groups:
        small = g["group"] == "no_decay"
        g["weight_decay"] = weight_decay if not small or decay_norm_and_bias else 0.0
        g["adapt"] = adapt_norm_and_bias if small else True
    return groups


class Lars(torch.optim.Optimizer):
    """LARS (You, Gitman & Ginsburg 2017) on torch's SGD; see the module docstring for the
    order of lr, momentum and decay. Per group: ``adapt`` (apply the trust ratio)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        trust_clip: bool = False,
        adapt: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            trust_clip=trust_clip,
            adapt=adapt,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, wd, m = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                if group["adapt"]:
                    d.mul_(self._trust_ratio(p, p.grad, group))
                if m:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # torch's SGD: the first buffer is the step itself
                        buf = state["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(m).add_(d, alpha=1.0 - group["dampening"])
                    d = d.add(buf, alpha=m) if group["nesterov"] else buf
                p.add_(d, alpha=-lr)
        return loss

    @staticmethod
    def _trust_ratio(p: torch.Tensor, g: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """Eq. 6: ``eta ||w|| / (||g|| + wd ||w||)`` (+ eps); LARC-clipped when asked."""
        w_norm, g_norm = p.norm(), g.norm()
        wd = group["weight_decay"]
        ratio = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
        ratio = _norm_ratio(w_norm, g_norm, ratio)
        if group["trust_clip"]:
            # LARC: the layer's rate lr * ratio never exceeds lr. At lr 0 (a warmup's start)
            # nothing moves whatever the ratio, so 1 avoids dividing by zero.
            lr = group["lr"]
            ratio = (ratio / lr).clamp(max=1.0) if lr > 0 else torch.ones_like(ratio)
        return ratio


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020, Algorithm 2): Adam's bias-corrected moments, the decay added to
    the update (``u = m_hat / (sqrt(v_hat) + eps) + wd w``) and the step ``lr ||w|| / ||u|| u``
    per tensor. ``max_grad_norm`` (off by default; not in the paper) clips the global gradient
    norm first, as NVIDIA's FusedLAMB and timm do by default."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = ADAM_BETAS,
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        bias_correction: bool = True,
        trust_clip: bool = False,
        max_grad_norm: float | None = None,
        adapt: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            trust_clip=trust_clip,
            adapt=adapt,
        )
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    def _grad_scale(self) -> torch.Tensor | None:
        """1 / max(global grad norm / max_grad_norm, 1), or None without clipping."""
        if self.max_grad_norm is None:
            return None
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        return 1.0 / (total / self.max_grad_norm).clamp(min=1.0)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = closure_loss(closure)
        scale = self._grad_scale()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if scale is None else p.grad * scale
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                bc1, bc2 = (1 - beta1**t, 1 - beta2**t) if group["bias_correction"] else (1, 1)
                u = (m / bc1).div_((v / bc2).sqrt_().add_(eps))
                if wd:
                    u.add_(p, alpha=wd)
                if group["adapt"]:
                    w_norm, u_norm = p.norm(), u.norm()
                    ratio = _norm_ratio(w_norm, u_norm, w_norm / u_norm)
                    if group["trust_clip"]:
                        ratio = ratio.clamp(max=1.0)
                    u.mul_(ratio)
                p.add_(u, alpha=-lr)
        return loss


# ---------------------------------------------------------------- builders
# Registered in trainrepro.optim.factory; see trainrepro.optim.params.option.
_LAYER_KEYS = {"decay_norm_and_bias": False, "adapt_norm_and_bias": False}


@option(
    Lars,
    {
        "lr": 1.0,
        **MOMENTUM_KEYS,
        "weight_decay": 5e-4,
        "trust_coefficient": 0.001,
        "eps": 1e-8,
        "trust_clip": False,
        **_LAYER_KEYS,
    },
    layer_groups,
    **MOMENTUM_CHECKS,
    trust_coefficient=positive,
    eps=non_negative,
    trust_clip=flag,
)
def lars() -> None:
    """LARS (You, Gitman & Ginsburg 2017): SGD with a per-tensor trust ratio."""


@option(
    Lamb,
    {
        **ADAM_KEYS,
        "eps": 1e-6,
        "weight_decay": 0.01,
        "bias_correction": True,
        "trust_clip": False,
        "max_grad_norm": None,
        **_LAYER_KEYS,
    },
    layer_groups,
    bias_correction=flag,
    trust_clip=flag,
    max_grad_norm=optional(positive),
)
def lamb() -> None:
    """LAMB (You et al. 2020): Adam with the decay in the update and a per-tensor trust ratio."""

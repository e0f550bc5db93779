"""Weight decay of normalization scales towards a target other than 0.

Summers & Dinneen (ICLR 2020, "Four Things Everyone Should Know to Improve Batch Normalization",
Sec. 3.3) study weight decay on BN's gamma and beta. The variant here decays each norm layer's
scale gamma towards ``norm_decay_target`` (1: the identity scale) instead of 0; shifts, biases
and every other weight still decay towards 0:

* coupled (L2) decay:  g += wd * (gamma - target)
* decoupled decay:     gamma -= lr * wd * (gamma - target)   (Loshchilov & Hutter 2019 form)

torch's optimizers only know the target 0, so the scales get their own param group (tagged
``decay_target``) that keeps torch's ``g += wd * p`` / ``p -= lr * wd * p``, and a step hook
adds the constant the target contributes: ``g -= wd * target`` before the step (coupled), or
``p += lr * wd * target`` after it (decoupled; the two terms of one update add, so their order
does not matter). Hooks are rebuilt with the optimizer, and ``decay_target`` is saved in its
state dict, so resumed runs match.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.factory import NORM_TYPES


def norm_scales(model: nn.Module) -> list[nn.Parameter]:
    """The trainable per-channel scales (gamma) of the model's normalization layers."""
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, NORM_TYPES)
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and m.weight.requires_grad
    ]


def split_norm_scales(
    groups: list[dict[str, Any]], model: nn.Module, target: float
) -> list[dict[str, Any]]:
    """Move the norm scales out of the decayed group into one with ``decay_target``."""
    scales = {id(p) for p in norm_scales(model)}
    if not scales:
        raise ConfigError(
            "optimizer.norm_decay_target",
            target,
            "the model has no normalization scale (gamma) to decay towards it",
        )
    out = []
    for group in groups:
        if group["group"] != "decay":
            out.append(group)
            continue
        rest = [p for p in group["params"] if id(p) not in scales]
        mine = [p for p in group["params"] if id(p) in scales]
        if rest:
            out.append({**group, "params": rest})
        out.append({**group, "params": mine, "group": "norm_scale", "decay_target": target})
    return out


def _targets(opt: torch.optim.Optimizer) -> list[tuple[dict[str, Any], float, float]]:
    return [
        (g, float(g["decay_target"]), float(g["weight_decay"]))
        for g in opt.param_groups
        if g.get("decay_target", 0.0) and g["weight_decay"]
    ]


@torch.no_grad()
def _coupled_hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for group, target, wd in _targets(opt):
        for p in group["params"]:
            if p.grad is not None:
                p.grad.sub_(wd * target)


@torch.no_grad()
def _decoupled_hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for group, target, wd in _targets(opt):
        for p in group["params"]:
            if p.grad is not None:  # torch skips parameters without a gradient
                p.add_(group["lr"] * wd * target)


def attach_decay_target(opt: torch.optim.Optimizer, *, decoupled: bool) -> torch.optim.Optimizer:
    """Register the hook that moves the decay's fixed point of tagged groups to their target."""
    if any(g.get("decay_target", 0.0) for g in opt.param_groups):
        if decoupled:
            opt.register_step_post_hook(_decoupled_hook)
        else:
            opt.register_step_pre_hook(_coupled_hook)
    return opt

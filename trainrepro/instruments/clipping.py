"""Gradient clipping callbacks: Adaptive Gradient Clipping and the global-norm baseline.

AGC (Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
Normalization", ICML 2021, arXiv:2102.06171, Sec. 4.1, Eq. 3) clips each unit i (output row /
output channel) of each parameter by the ratio of the unit-wise gradient and weight norms:

    G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i    if ||G_i|| / max(||W_i||, eps) > lambda,

with Frobenius norms over everything but the output dimension (the whole tensor for scalars and
vectors), eps = 1e-3 so zero-initialized parameters can move, and a 1e-6 floor on ||G_i|| that
only guards the division (DeepMind's nfnets/agc_optax.py; timm's timm/utils/agc.py). The paper
does not clip the final linear layer ("we found it beneficial not to clip the final linear
layer", Sec. 4.1): by default the parameters of the model's last ``nn.Linear`` are left out.

Both run at ``after_backward``, on the whole batch's unscaled gradients before the optimizer
step, so weight decay (inside the step) is not clipped, as in timm's training script. Each adds
a metrics.csv column per epoch: the fraction of units (AGC) or of updates (global norm) clipped.
The counts stay on the gradients' device until the epoch's end (or a checkpoint): a read per
update would make the host wait for the GPU at every step (issue 20).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainrepro.engine.run import Callback
from trainrepro.errors import ConfigError

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

GRAD_NORM_FLOOR = 1e-6  # only prevents 0/0; DeepMind: "technically should be impossible to engage"


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit (dim 0) for matrices and kernels, of the whole tensor otherwise."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_(
    params: list[nn.Parameter], clipping: float, eps: float = 1e-3
) -> tuple[torch.Tensor | int, int]:
    """Clip the gradients of ``params`` in place by AGC; return (units clipped, a tensor on
    the gradients' device, or 0 when nothing had a gradient; units)."""
    clipped: torch.Tensor | int = 0
    total = 0
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        max_norm = unitwise_norm(p.detach()).clamp(min=eps) * clipping
        g_norm = unitwise_norm(g)
        trigger = g_norm > max_norm
        g.mul_(torch.where(trigger, max_norm / g_norm.clamp(min=GRAD_NORM_FLOOR), 1.0))
        clipped = clipped + trigger.sum()  # no read: summed on the device
        total += trigger.numel()
    return clipped, total


def _real(key: str, value: Any, minimum: float = 0.0) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > minimum:
        raise ConfigError(key, value, f"must be a number > {minimum:g}")
    return float(value)


def _select(model: nn.Module, key: str, exclude: Any) -> list[nn.Parameter]:
    """Trainable parameters minus ``exclude`` (fnmatch patterns; null: the last nn.Linear)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if exclude is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        skip = {id(p) for p in linears[-1].parameters()} if linears else set()
        return [p for _, p in named if id(p) not in skip]
    if not isinstance(exclude, list | tuple) or not all(isinstance(e, str) for e in exclude):
        raise ConfigError(f"{key}.exclude", exclude, "must be null or a list of patterns")
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
            raise ConfigError(f"{key}.exclude", pattern, "matches no parameter name")
    return [p for n, p in named if not any(fnmatch.fnmatchcase(n, e) for e in exclude)]


class _CountingClip(Callback):
    """Counts what was clipped over an epoch; the counts travel in the checkpoint."""

    column = ""

    def __init__(self) -> None:
        self.clipped: torch.Tensor | int = 0  # a device tensor once anything was counted
        self.total = 0

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        row[self.column] = int(self.clipped) / self.total if self.total else 0.0  # epoch end
        self.clipped = self.total = 0

    def state_dict(self) -> dict[str, Any]:
        return {"clipped": int(self.clipped), "total": self.total}  # at a checkpoint only

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clipped, self.total = int(state["clipped"]), int(state["total"])


class AdaptiveGradClip(_CountingClip):
    """AGC (Brock et al. 2021b) on ``params`` at every update."""

    column = "agc_clipped_units"

    def __init__(self, params: list[nn.Parameter], clipping: float, eps: float) -> None:
        super().__init__()
        self.params, self.clipping, self.eps = params, clipping, eps

    def after_backward(self, run: Run, update: int) -> None:
        clipped, total = adaptive_clip_(self.params, self.clipping, self.eps)
        self.clipped = self.clipped + clipped
        self.total += total


class GlobalNormClip(_CountingClip):
    """Scale all gradients so their global L2 norm is at most ``max_norm`` (the baseline of
    Brock et al. 2021b, Sec. 4.1; torch.nn.utils.clip_grad_norm_)."""

    column = "clip_norm_clipped_updates"

    def __init__(self, params: list[nn.Parameter], max_norm: float) -> None:
        super().__init__()
        self.params, self.max_norm = params, max_norm

    def after_backward(self, run: Run, update: int) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.clipped = self.clipped + (norm > self.max_norm).long()  # no read: on the device
        self.total += 1


def agc(
    model: nn.Module, *, clipping: float = 0.01, eps: float = 1e-3, exclude: Any = None
) -> AdaptiveGradClip:
    """Builder of ``+callbacks=agc`` (conf/callbacks/agc.yaml)."""
    key = "callbacks.agc"
    clipping = _real(f"{key}.clipping", clipping)
    eps = _real(f"{key}.eps", eps)
    return AdaptiveGradClip(_select(model, key, exclude), clipping, eps)


def clip_norm(model: nn.Module, *, max_norm: float = 1.0) -> GlobalNormClip:
    """Builder of ``+callbacks=clip_norm`` (conf/callbacks/clip_norm.yaml)."""
    max_norm = _real("callbacks.clip_norm.max_norm", max_norm)
    return GlobalNormClip([p for p in model.parameters() if p.requires_grad], max_norm)

"""MetaInit (Dauphin & Schoenholz 2019, "MetaInit: Initializing learning by learning to
initialize", NeurIPS): before training, tune the norm of every weight tensor so as to minimise
the gradient quotient

    GQ(L, theta) = 1/N || (g - Hg) / (g + eps sign(g)) - 1 ||_1,  g = grad L,  Hg = grad ||g||^2/2

on data-independent batches (inputs ~ N(0, 1), random labels), by sign-SGD with momentum on each
norm while its direction is kept. This follows the paper's Fig. 2 code (as published in
diggerdu/MetaInit, meta_init.py): only parameters with ndim >= 2 are tuned, every parameter
enters GQ, the eps sign term carries no gradient, the model is in eval mode. Defaults are that
code's: lr 0.1, momentum 0.9, steps 500, eps 1e-5.

Enabled with ``+init=metainit`` (conf/init/metainit.yaml): the engine calls the
:class:`MetaInit` the builder returns after the model is built, and not on resume (the
checkpoint's weights replace them anyway).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainrepro.data.splits import derive_seed
from trainrepro.errors import ConfigError

Tensor = torch.Tensor


def gradient_quotient(loss: Tensor, params: list[Tensor], eps: float = 1e-5) -> Tensor:
    """GQ of ``loss`` over ``params`` (differentiable: the graph is kept for d GQ / d theta).

    Each entry contributes |(g - Hg) / (g + eps sign(g)) - 1|, sign(0) taken as +1 as in the
    reference code; the mean is over every entry of ``params``.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    half_sq = sum((g**2).sum() / 2 for g in grads)
    hvps = torch.autograd.grad(half_sq, params, create_graph=True, allow_unused=True)
    total = loss.new_zeros(())
    for g, hg in zip(grads, hvps, strict=True):
        hg = torch.zeros_like(g) if hg is None else hg
        damp = (eps * (2 * (g >= 0).to(g.dtype) - 1)).detach()
        total = total + ((g - hg) / (g + damp) - 1).abs().sum()
    return total / sum(p.numel() for p in params)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(steps: int, lr: float, momentum: float, eps: float, batch_size: int) -> None:
    if not _is_int(steps) or steps < 0:
        raise ConfigError("init.steps", steps, "must be an integer >= 0")
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError("init.batch_size", batch_size, "must be an integer >= 1")
    for key, value in (("lr", lr), ("eps", eps)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"init.{key}", value, "must be > 0")
    if not isinstance(momentum, int | float) or isinstance(momentum, bool) or not 0 <= momentum < 1:
        raise ConfigError("init.momentum", momentum, "must be in [0, 1)")


def metainit(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    steps: int = 500,
    lr: float = 0.1,
    momentum: float = 0.9,
    eps: float = 1e-5,
    batch_size: int = 32,
    log_every: int = 0,
) -> dict[str, Any]:
    """Tune the weight norms of ``model`` in place; return GQ before and after (on one fixed
    probe batch), at the first and last step (on their own batches), and the settings.

    Batches are drawn from a generator seeded by (``seed``, "metainit") on the CPU, so the
    result is reproducible and the global RNG (data order, dropout) is left as it was.
    """
    _check(steps, lr, momentum, eps, batch_size)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(derive_seed(seed, "metainit"))
    params = [p for p in model.parameters() if p.requires_grad]
    tuned = [p for p in params if p.dim() >= 2]
    memory = [0.0] * len(tuned)
    was_training = model.training
    model.eval()  # the reference code's choice: BN uses its (initial) running statistics

    def batch() -> tuple[Tensor, Tensor]:
        x = torch.randn(batch_size, *input_shape, generator=g).to(device)
        return x, torch.randint(0, num_classes, (batch_size,), generator=g).to(device)

    def quotient(x: Tensor, y: Tensor) -> Tensor:
        return gradient_quotient(F.cross_entropy(model(x), y), params, eps)

    # GQ before and after on one fixed probe batch: each step's own batch is noisy.
    probe = batch()
    gq_before = float(quotient(*probe).detach())
    history = []
    for step in range(steps):
        gq = quotient(*batch())
        history.append(float(gq.detach()))
        if not math.isfinite(history[-1]):
            break  # a NaN would spread into every norm; keep the last finite weights
        grads = torch.autograd.grad(gq, tuned, allow_unused=True)
        with torch.no_grad():
            for j, (p, d) in enumerate(zip(tuned, grads, strict=True)):
                norm = float(p.norm())
                if d is None or norm == 0.0:
                    continue
                # d GQ / d ||p|| = <p, d GQ / dp> / ||p||: sign-SGD with momentum on the norm.
                memory[j] = momentum * memory[j] - lr * float(torch.sign((p * d).sum()))
                p.mul_((norm + memory[j]) / norm)
        if log_every and step % log_every == 0:
            print(f"metainit: step {step}/{steps} GQ {history[-1]:.4f}")
    gq_after = float(quotient(*probe).detach())
    model.train(was_training)
    return {
        "gq_before": gq_before,
        "gq_after": gq_after,
        "gq_first_step": history[0] if history else None,
        "gq_last_step": history[-1] if history else None,
        "steps_run": len(history),
        "steps": steps,
        "lr": lr,
        "momentum": momentum,
        "eps": eps,
        "batch_size": batch_size,
        "tuned_tensors": len(tuned),
    }


class MetaInit:
    """The ``init`` group's product for ``+init=metainit``: validated settings, applied by the
    engine (``trainrepro.engine.build``) to a freshly built model, never on resume."""

    name = "metainit"

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def __call__(
        self, model: nn.Module, *, input_shape: tuple[int, ...], num_classes: int, seed: int
    ) -> str:
        """Run MetaInit on ``model``; return the note for the run's summary."""
        record = metainit(
            model, input_shape=input_shape, num_classes=num_classes, seed=seed, **self.settings
        )
        return (
            f"init=metainit: gradient quotient {record['gq_before']:.4g} -> "
            f"{record['gq_after']:.4g} after {record['steps_run']} steps (lr {record['lr']}, "
            f"momentum {record['momentum']}, eps {record['eps']}, batch {record['batch_size']} "
            f"of N(0,1) inputs, random labels, seeded from seed={seed}; "
            f"{record['tuned_tensors']} weight tensors rescaled)"
        )


def build_metainit(
    *,
    steps: int = 500,
    lr: float = 0.1,
    momentum: float = 0.9,
    eps: float = 1e-5,
    batch_size: int = 32,
    log_every: int = 50,
) -> MetaInit:
    """The ``init`` group's builder: validated settings for :func:`metainit` (a flat node)."""
    _check(steps, lr, momentum, eps, batch_size)
    if not _is_int(log_every) or log_every < 0:
        raise ConfigError("init.log_every", log_every, "must be an integer >= 0")
    return MetaInit(
        steps=steps, lr=lr, momentum=momentum, eps=eps, batch_size=batch_size, log_every=log_every
    )

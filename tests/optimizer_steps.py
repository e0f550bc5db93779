"""Shared by the optimizer tests: a few parameters, a reproducible gradient stream, and a
step-by-step driver that records the parameters after every update."""

from __future__ import annotations

import torch

SHAPES = ((3, 4), (5,))


def make_params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def grad_stream(steps: int, dtype: torch.dtype = torch.float64) -> list[list[torch.Tensor]]:
    """Reproducible gradients, with a nonzero mean so the moments do not cancel."""
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g, dtype=dtype) + 0.3 for s in SHAPES] for _ in range(steps)]


def run(
    opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], grads: list[list[torch.Tensor]]
) -> list[list[torch.Tensor]]:
    """Apply the gradients one step at a time; the parameters after every step."""
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history

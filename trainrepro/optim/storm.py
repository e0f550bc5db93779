"""STORM (Cutkosky & Orabona 2019, "Momentum-Based Variance Reduction in Non-Convex SGD",
NeurIPS), the paper's algorithm with a global gradient norm:

    eta_t   = k / (w + sum_{i<=t} ||g(x_i, xi_i)||^2)^(1/3)
    d_1     = g(x_1, xi_1)
    d_t     = g(x_t, xi_t) + (1 - a_t) (d_{t-1} - g(x_{t-1}, xi_t)),   a_t = min(1, c eta_{t-1}^2)
    x_{t+1} = x_t - eta_t d_t

g(x_{t-1}, xi_t) is the gradient at the previous iterate on the current batch: :class:`StormRule`
keeps a copy of the model at x_{t-1} and hands that gradient to the optimizer. a_t is capped at
1 as in the authors' TF code (google-research/storm_optimizer), which is otherwise
coordinate-wise; the paper's analysis needs c eta^2 <= 1. The schedule scales k (the group's
``lr``), so warmup or decay compose with STORM's own step size. Gradient evaluations: B at the
first update, 2B after.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainrepro.errors import ConfigError, check_number
from trainrepro.optim.params import param_groups
from trainrepro.optim.update_rules import UpdateRule, backward, trainable

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

Tensor = torch.Tensor


class Storm(torch.optim.Optimizer):
    """The STORM step; needs ``state[p]["grad_prev"]`` from :class:`StormRule` after update 1.

    The global accumulators ``sum_g2`` and ``eta_prev`` live with the first group (so
    state_dict() carries them) as float64 scalar tensors on the parameters' device: eta_t
    and a_t are computed there, and no step reads a number back to the host.
    """

    def __init__(self, params: Any, *, lr: float = 0.1, w: float = 0.1, c: float = 100.0) -> None:
        super().__init__(params, {"lr": lr, "w": w, "c": c})
        self.param_groups[0].setdefault("sum_g2", 0.0)
        self.param_groups[0].setdefault("eta_prev", None)

    def update_rule(self, model: nn.Module) -> StormRule:
        return StormRule(model)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        head = self.param_groups[0]
        # Python floats (a new optimizer, checkpoints before the tensors) or tensors that a
        # checkpoint brought back on the CPU: as float64 on the device; a no-op after that.
        sum_g2 = torch.as_tensor(head["sum_g2"], dtype=torch.float64, device=params[0].device)
        total = params[0].grad.pow(2).sum()  # float32 partial sums, added in order, as before
        for p in params[1:]:
            total = total + p.grad.pow(2).sum()
        head["sum_g2"] = sum_g2 = sum_g2 + total.double()
        keep = None  # 1 - a_t, a_t = min(1, c eta_{t-1}^2); d_1 is the gradient itself
        if head["eta_prev"] is not None:
            eta_prev = torch.as_tensor(head["eta_prev"], dtype=torch.float64, device=sum_g2.device)
            keep = 1.0 - (head["c"] * eta_prev**2).clamp(max=1.0)
        for group in self.param_groups:
            eta = group["lr"] / (group["w"] + sum_g2) ** (1.0 / 3.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if keep is None or "d" not in state:
                    state["d"] = p.grad.clone()
                else:
                    state["d"].sub_(state["grad_prev"]).mul_(keep).add_(p.grad)
                p.addcmul_(state["d"], eta, value=-1.0)  # x -= eta_t d_t, eta_t on the device
        head["eta_prev"] = eta


class StormRule(UpdateRule):
    """Gradients at x_t and, on the same batch, at x_{t-1} (a copy of the model one step behind)."""

    def __init__(self, model: nn.Module) -> None:
        self.previous = copy.deepcopy(model)
        self.started = False

    def gradients(
        self, run: Run, x: Tensor, y: Tensor, max_micro_batch: int | None
    ) -> tuple[Tensor, Tensor, int]:
        if run.scaler is not None:
            raise ConfigError("precision", "fp16", "storm does not support fp16 loss scaling")
        logits, loss = backward(run, run.model, x, y, max_micro_batch)
        evals = len(y)
        if self.started:
            prev = self.previous.train(run.model.training)
            prev.zero_grad(set_to_none=True)
            backward(run, prev, x, y, max_micro_batch)
            for p, q in zip(trainable(run.model), trainable(prev), strict=True):
                if q.grad is not None:
                    run.optimizer.state[p]["grad_prev"] = q.grad.detach().clone()
            evals *= 2
        # x_t becomes the previous iterate of the next update (parameters and BN buffers).
        self.previous.load_state_dict(run.model.state_dict())
        self.started = True
        return logits, loss, evals

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous.state_dict(), "started": self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous.load_state_dict(state["previous"])
        self.started = bool(state["started"])


def storm(
    model: nn.Module,
    *,
    k: float = 0.1,
    w: float = 0.1,
    c: float = 100.0,
) -> Storm:
    """STORM (Cutkosky & Orabona 2019); ``k`` is the optimizer's ``lr``, scaled by the schedule."""
    check_number("optimizer.k", k, 0.0, low_open=True)
    check_number("optimizer.w", w, 0.0, low_open=True)
    check_number("optimizer.c", c, 0.0, low_open=True)
    return Storm(param_groups(model, 0.0), lr=k, w=w, c=c)

"""The trainer's seam for update rules: how one batch becomes the gradients an update applies.

Plain SGD-family training needs one gradient per update; variance-reduced methods need more:
SVRG (trainrepro.optim.svrg) a second gradient on the same batch at a snapshot plus a full-dataset
gradient now and then, STORM (trainrepro.optim.storm) a second gradient on the same batch at the
previous iterate. Each is an :class:`UpdateRule`; the trainer calls, in order,

- ``start_epoch(run, epoch, batch_size, max_micro_batch)`` at the start of each epoch (not again
  when a run resumes inside it), returning the gradient evaluations it spent (SVRG's full
  pass: N);
- ``gradients(run, x, y, max_micro_batch)`` once per update, which leaves in each ``p.grad``
  what the optimizer's ``step()`` is to apply and returns the batch's logits and mean loss
  (at the current parameters) and the gradient evaluations spent, counted per example;

then the callbacks' ``after_backward`` and the optimizer step. ``state_dict`` travels in the
checkpoint (tensors and plain containers only), so a resumed run continues a rule exactly.

The base class lives with the ``Run`` type in ``trainrepro.engine.run``. An optimizer that
needs a rule other than :class:`PlainRule` says so with a method
``update_rule(model) -> UpdateRule``; every other optimizer gets the plain rule.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trainrepro.engine.run import UpdateRule

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

Tensor = torch.Tensor


def autocast(run: Run) -> contextlib.AbstractContextManager:
    """The run's reduced-precision autocast, or nothing in fp32."""
    if run.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run.device.type, dtype=run.autocast_dtype)


def backward(
    run: Run, model: torch.nn.Module, x: Tensor, y: Tensor, max_micro_batch: int | None
) -> tuple[Tensor, Tensor]:
    """Accumulate into ``model``'s ``.grad`` the gradient of the mean loss over the batch.

    A batch larger than ``max_micro_batch`` is split, each piece's loss weighted by its share of
    the batch, so the sum of the pieces' gradients is the whole batch's. Returns the logits and
    the mean loss, detached.
    """
    micro = len(y) if max_micro_batch is None else min(max_micro_batch, len(y))
    logits, losses = [], []
    for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
        with autocast(run):
            out = model(xm)
            loss = F.cross_entropy(out, ym) * (len(ym) / len(y))
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
        else:
            loss.backward()
        logits.append(out.detach())
        losses.append(loss.detach())
    return torch.cat(logits), torch.stack(losses).sum()


class PlainRule(UpdateRule):
    """The gradient of the batch's mean loss at the current parameters: SGD, Adam, ..."""

    def gradients(
        self, run: Run, x: Tensor, y: Tensor, max_micro_batch: int | None
    ) -> tuple[Tensor, Tensor, int]:
        logits, loss = backward(run, run.model, x, y, max_micro_batch)
        return logits, loss, len(y)


def update_rule_for(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> UpdateRule:
    """The optimizer's own rule if it declares one (``update_rule(model)``), else the plain."""
    make = getattr(optimizer, "update_rule", None)
    return make(model) if callable(make) else PlainRule()


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an update moves, in a fixed order (a copy's list pairs with it)."""
    return [p for p in model.parameters() if p.requires_grad]

"""The bottom of the engine: the ``Run`` type and the two seams it names.

Everything else in the package builds or drives a :class:`Run`; optimizers and instruments
import only this module of the engine, so they plug in without import circles.

**Callbacks**, the seam for instruments and tricks: a callback with no-op hooks.

A callback is a small object the trainer calls at fixed points of a run, so a new instrument
needs a module and a ``conf/callbacks/<name>.yaml``, not an edit of the training loop. Add one
with ``+callbacks=<name>`` (or ``+callbacks=[a,b]``); its builder receives the model as its one
positional argument plus the node's keys, and may raise ConfigError before training starts.

The hooks, in the order a run calls them:

- ``start(run, run_dir)``: once, after a resumed run's state is restored and the run directory
  exists, before the first update.
- ``after_backward(run, update)``: at every update, once the gradients of the whole logical
  batch (every micro-batch) are in ``p.grad``, unscaled, and before the optimizer step.
  ``update`` counts from 1 over the whole run, as the ``updates`` column of metrics.csv does.
- ``after_step(run, update, loss)``: at every update, right after the optimizer step (so the
  parameters are the new ones; model averages such as EMA/SWA read them here). ``loss`` is the
  batch's mean loss as a detached device tensor: reading it (``.item()``) waits for the
  device, so a callback reads it only every so many updates (loggers do).
- ``end_epoch(run, epoch, row)``: after each epoch, ``epoch`` counting from 1 (the row's
  ``epoch``), before the metrics are written and the checkpoint saved; keys a callback adds to
  ``row`` become metrics.csv columns.
- ``finish(run_dir, status)``: once, after summary.json; ``status`` is the summary's
  (completed, diverged or interrupted).

Under torchrun every rank calls every hook (after_backward sees the gradients already averaged
over the ranks); only rank 0 (``trainrepro.engine.distributed.is_main()``) should write files.

``state_dict``/``load_state_dict`` travel in the checkpoint, so a resumed run continues an
instrument exactly where it was at the last epoch end.

**Update rules**, how one batch becomes the gradients an update applies:
:class:`UpdateRule` (the plain rule and the variance-reduced ones are in
``trainrepro.optim.update_rules``, ``svrg``, ``storm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from trainrepro.data.splits import DataSplits
    from trainrepro.schedules import Schedule

Tensor = torch.Tensor


class Callback:
    """Base class: every hook does nothing, so a callback overrides only what it needs."""

    def start(self, run: Run, run_dir: Path) -> None:
        """Called once before the first update of this process."""

    def after_backward(self, run: Run, update: int) -> None:
        """Called with the batch's full, unscaled gradients, before the optimizer step."""

    def after_step(self, run: Run, update: int, loss: Tensor) -> None:
        """Called after the optimizer step of update ``update`` with its detached mean loss."""

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        """Called after epoch ``epoch`` (from 1) with its metrics row, before the checkpoint."""

    def finish(self, run_dir: Path, status: str) -> None:
        """Called once after summary.json is written."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this callback; saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class UpdateRule:
    """Base class: one gradient per update at the current parameters (see the module doc)."""

    def start_epoch(
        self, run: Run, epoch: int, batch_size: int, max_micro_batch: int | None = None
    ) -> int:
        """Work at an epoch's start; returns the gradient evaluations it spent."""
        return 0

    def gradients(
        self, run: Run, x: Tensor, y: Tensor, max_micro_batch: int | None
    ) -> tuple[Tensor, Tensor, int]:
        """Fill ``p.grad`` for the coming step; return (logits, mean loss, gradient evals)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@dataclass
class Run:
    """The built objects of one run."""

    data: DataSplits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    train_loader: Any
    test_loader: Any
    val_loader: Any | None
    device: torch.device
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    rule: UpdateRule  # how a batch becomes the gradients
    callbacks: list[Callback] = field(default_factory=list)

"""Averaged models: an exponential moving average of the weights (EMA) and SWA.

EMA (Polyak & Juditsky 1992, "Acceleration of stochastic approximation by averaging", in its
exponential form): after every update, ``ema <- decay * ema + (1 - decay) * w``, starting from
the weights after the first update; the BN running statistics are averaged the same way, as
timm's ModelEmaV3 does. SWA (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and
Better Generalization"): the equal-weight mean of the weights at the end of every epoch from
``start`` on, whose BN statistics are then recomputed with one pass over the training data
(``torch.optim.swa_utils.update_bn``), since no single model's running statistics fit it.

Both keep a ``torch.optim.swa_utils.AveragedModel`` and evaluate it at each epoch end with the
trainer's own ``evaluate`` (same loaders, precision and autocast), adding the metrics.csv
columns ``ema_test_loss``/``ema_test_acc`` (``swa_*``; ``*_val_*`` too when the run has a
validation split). The averaged weights and their count travel in the callback's state_dict,
hence in every checkpoint, so a resumed run continues the average exactly. At the end, rank 0
writes the averaged model's ``state_dict`` (CPU tensors only, the model's own keys) to
``ema.pt`` / ``swa.pt`` in the run dir, atomically, for ``model.load_state_dict``.

SWA's learning rate is the run's ``schedule``: SWALR is not applied (the schedule is a pure
function of progress, owned by the trainer); pick a constant or cyclic schedule for the SWA
phase, as the paper does.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from trainrepro.engine.distributed import is_main
from trainrepro.engine.records import atomic_torch_save
from trainrepro.engine.run import Callback
from trainrepro.engine.train import evaluate
from trainrepro.errors import ConfigError, check_bool, check_int, check_number
from trainrepro.optim.update_rules import autocast
from trainrepro.schedules import Warmup

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

Tensor = torch.Tensor


def _tensors(module: torch.nn.Module) -> list[Tensor]:
    """Parameters, then buffers, in module order: AveragedModel's order with use_buffers."""
    return [t.detach() for t in itertools.chain(module.parameters(), module.buffers())]


def has_batch_norm(module: torch.nn.Module) -> bool:
    """Whether ``update_bn`` has statistics to recompute (it handles torch's _BatchNorm,
    ghost BN included; batch-group norm keeps the last averaged model's statistics)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


class Averaged(Callback):
    """An AveragedModel evaluated into ``<prefix>_*`` columns, kept in the checkpoint and saved
    as ``<prefix>.pt`` at the end."""

    prefix = ""

    def __init__(self, averaged: AveragedModel, *, eval_batch_size: int, save: bool) -> None:
        self.averaged = averaged
        self.eval_batch_size = eval_batch_size
        self.save = save
        # Models averaged so far: AveragedModel's n_averaged, mirrored here so that no update
        # reads a tensor (tests/test_host_sync.py).
        self.count = 0

    def evaluate_into(self, run: Run, row: dict[str, Any]) -> None:
        """The trainer's evaluation of the averaged model, into the row's columns."""
        shadow = replace(run, model=self.averaged.module)  # the run's loaders, precision, device
        loaders = [("test", run.test_loader)] + (
            [("val", run.val_loader)] if run.val_loader else []
        )
        for split, loader in loaders:
            loss, acc = evaluate(shadow, loader, self.eval_batch_size)
            row[f"{self.prefix}_{split}_loss"], row[f"{self.prefix}_{split}_acc"] = loss, acc

    def empty_into(self, run: Run, row: dict[str, Any]) -> None:
        """Empty cells, so the columns exist from the first row on."""
        for split in ("test", "val") if run.val_loader else ("test",):
            row[f"{self.prefix}_{split}_loss"] = row[f"{self.prefix}_{split}_acc"] = None

    def finish(self, run_dir: Path, status: str) -> None:
        # A diverged run's average holds non-finite weights: no model worth keeping.
        if not (self.save and is_main() and self.count and status != "diverged"):
            return
        state = self.averaged.module.state_dict()
        cpu = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        atomic_torch_save(cpu, Path(run_dir) / f"{self.prefix}.pt")

    def state_dict(self) -> dict[str, Any]:
        # Tensors only (n_averaged and the module's weights): checkpoints load weights_only.
        return {k: v.detach().to("cpu", copy=True) for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.averaged.load_state_dict(state)
            self.count = int(state["n_averaged"])


class EMA(Averaged):
    """Exponential moving average of weights and buffers, updated after every optimizer step."""

    prefix = "ema"

    def __init__(self, averaged: AveragedModel, *, decay: float, **keys: Any) -> None:
        super().__init__(averaged, **keys)
        self.decay = decay
        self.lerp = get_ema_multi_avg_fn(decay)

    def after_step(self, run: Run, update: int, loss: Tensor) -> None:
        # AveragedModel.update_parameters(run.model) would do the same arithmetic, but it copies
        # its CPU count to the device each call, which on CUDA waits for the queue: once per
        # update here. So the same lerp is applied per dtype (floats lerp, integer counters
        # take the rounded formula), and the count is advanced on the CPU.
        ours, theirs = _tensors(self.averaged.module), _tensors(run.model)
        with torch.no_grad():
            if self.count == 0:  # the first average is the model itself, as AveragedModel's
                torch._foreach_copy_(ours, theirs)
            else:
                for floats in (True, False):
                    pairs = [
                        p
                        for p in zip(ours, theirs, strict=True)
                        if p[0].is_floating_point() == floats
                    ]
                    if pairs:
                        self.lerp([a for a, _ in pairs], [b for _, b in pairs], None)
        self.averaged.n_averaged += 1  # a CPU tensor: no device is waited for
        self.count += 1

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        if is_main():  # only rank 0 evaluates and writes, as the trainer's own columns
            self.evaluate_into(run, row)


def first_epoch(start: int | float, epochs: int) -> int:
    """The first epoch (from 1) whose end SWA averages: ``start`` itself when it is an epoch,
    ``ceil(start * epochs)`` when it is a fraction (0.75 of 200 epochs: 150, ..., 200)."""
    if isinstance(start, int):
        return start
    return max(1, math.ceil(start * epochs - 1e-9))  # 0.3 * 10 is 3.0000000000000004


class SWA(Averaged):
    """Equal-weight average of the weights at each epoch end from ``start`` on; BN statistics
    recomputed over the training data before each evaluation."""

    prefix = "swa"

    def __init__(
        self, averaged: AveragedModel, *, start: int | float, update_bn: bool, **keys: Any
    ) -> None:
        super().__init__(averaged, **keys)
        self.start_at = start
        self.recompute_bn = update_bn
        self.first = 0  # set in start(), from the run's epochs

    def start(self, run: Run, run_dir: Path) -> None:
        schedule = run.schedule
        while isinstance(schedule, Warmup):  # a warmup's own epochs are not the run's
            schedule = schedule.inner
        epochs = int(schedule.epochs)  # type: ignore[attr-defined]
        self.first = first_epoch(self.start_at, epochs)
        if self.first > epochs:
            raise ConfigError(
                "callbacks.swa.start", self.start_at, f"is after the run's last epoch ({epochs})"
            )

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        loss = row.get("train_loss")
        diverged = loss is not None and not math.isfinite(loss)
        if epoch >= self.first and not diverged:
            self.averaged.update_parameters(run.model)  # once an epoch: its host read is cheap
            self.count += 1
        if not is_main():
            return
        if not self.count:
            self.empty_into(run, row)
            return
        if self.recompute_bn and has_batch_norm(self.averaged.module):
            self.update_bn(run, row["batch_size"], epoch - 1)
        self.evaluate_into(run, row)

    def update_bn(self, run: Run, batch_size: int, epoch: int) -> None:
        """One forward pass over the epoch's training batches (its order and augmentation, the
        run's batch size and autocast) with cumulative BN statistics; the global RNG (dropout)
        is forked, so the run itself goes on as without SWA."""
        batches = run.train_loader.batches(epoch, batch_size)
        devices = [run.device] if run.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), autocast(run):
            update_bn(batches, self.averaged)


def _keys(eval_batch_size: Any, save: Any, group: str) -> dict[str, Any]:
    return {
        "eval_batch_size": check_int(f"{group}.eval_batch_size", eval_batch_size, 1),
        "save": check_bool(f"{group}.save", save),
    }


def ema(
    model: torch.nn.Module, *, decay: float = 0.999, eval_batch_size: int = 1000, save: bool = True
) -> EMA:
    """Builder for ``conf/callbacks/ema.yaml``."""
    decay = check_number("callbacks.ema.decay", decay, 0.0, 1.0, low_open=True, high_open=True)
    keys = _keys(eval_batch_size, save, "callbacks.ema")
    # use_buffers=True: the BN running statistics are averaged over the same horizon as the
    # weights (timm's ModelEmaV3), so evaluating the EMA needs no pass over the training data.
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    return EMA(averaged, decay=decay, **keys)


def swa(
    model: torch.nn.Module,
    *,
    start: int | float = 0.75,
    update_bn: bool = True,
    eval_batch_size: int = 1000,
    save: bool = True,
) -> SWA:
    """Builder for ``conf/callbacks/swa.yaml``; ``start`` is checked against the run's epochs in
    ``start()``, before the first update."""
    key = "callbacks.swa.start"
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise ConfigError(key, start, "must be a fraction in (0, 1) of the epochs or an epoch >= 1")
    if isinstance(start, int):
        check_int(key, start, 1)
    elif not 0 < start < 1:
        raise ConfigError(
            key, start, "must be a fraction in (0, 1) of the epochs, or a whole epoch (e.g. 150)"
        )
    keys = _keys(eval_batch_size, save, "callbacks.swa")
    check_bool("callbacks.swa.update_bn", update_bn)
    # use_buffers=False: only the weights are averaged; the buffers follow the current model
    # and BN's are recomputed for the average by update_bn (Izmailov et al.), when it has BN.
    return SWA(AveragedModel(model), start=start, update_bn=update_bn, **keys)

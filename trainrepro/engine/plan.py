"""A schedule preview that trains nothing: ``trainrepro plan ...`` or ``... +plan=true``.

Prints, per epoch, what the trainer will use: learning rate and momentum at the epoch's first
update, batch size, Smith et al.'s noise scale g = lr/(1-m) * (N/B - 1), and cumulative
parameter updates; then the totals and the images each end-of-epoch evaluation scores. Reads
the dataset only for its sizes.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from trainrepro.config import instantiate
from trainrepro.data import DataSplits
from trainrepro.engine.build import check_batch_sizes, check_top_level, make_schedule
from trainrepro.optim.factory import get_momentum
from trainrepro.schedules import Schedule
from trainrepro.schedules.noise import noise_scale


def plan_rows(
    schedule: Schedule, epochs: int, n_train: int, momentum: float | None
) -> list[dict[str, Any]]:
    """One row per epoch, counting updates exactly as the trainer does (full batches only)."""
    rows, updates, samples = [], 0, 0
    for epoch in range(epochs):
        point = schedule(float(epoch), updates)
        m = point.momentum if point.momentum is not None else momentum
        steps = n_train // point.batch_size
        updates += steps
        samples += steps * point.batch_size
        rows.append(
            {
                "epoch": epoch + 1,
                "lr": point.lr,
                "batch_size": point.batch_size,
                "momentum": m,
                "noise_scale": noise_scale(point.lr, m, n_train, point.batch_size),
                "updates_in_epoch": steps,
                "updates": updates,
                "samples": samples,
            }
        )
    return rows


def build_plan(cfg: DictConfig) -> tuple[list[dict[str, Any]], int]:
    """Validate the config as a run would and return the plan rows and N."""
    rows, data = _plan_and_data(cfg)
    return rows, len(data.train)


def _plan_and_data(cfg: DictConfig) -> tuple[list[dict[str, Any]], DataSplits]:
    check_top_level(cfg)
    norm = instantiate("normalization", cfg.normalization)
    optimizer = instantiate("optimizer", cfg.optimizer, torch.nn.Linear(1, 1))
    schedule = make_schedule(cfg, optimizer)
    data = instantiate("dataset", cfg.dataset)
    n_train = len(data.train)
    check_batch_sizes(schedule, cfg.epochs, n_train, norm, cfg.max_micro_batch)
    return plan_rows(schedule, cfg.epochs, n_train, get_momentum(optimizer)), data


def evaluation_note(data: DataSplits) -> str:
    """One line: the test (and validation) images each end-of-epoch evaluation scores."""
    if data.full_test_size is None:
        line = f"evaluation after each epoch: all {len(data.test)} test images"
    else:
        line = (
            f"evaluation after each epoch: {len(data.test)} of the {data.full_test_size} test "
            f"images, a stratified subset (dataset.test_size; the same images whatever the seed)"
        )
    return line + (f", and {len(data.val)} validation images" if data.val is not None else "")


def format_plan(rows: list[dict[str, Any]], n_train: int) -> str:
    """A table with one line per epoch, then the totals."""
    lines = [
        f"{'epoch':>5} {'lr':>10} {'batch':>7} {'momentum':>8} {'noise scale':>12} "
        f"{'updates/ep':>10} {'updates':>9}"
    ]
    for row in rows:
        m = "-" if row["momentum"] is None else f"{row['momentum']:.3g}"
        lines.append(
            f"{row['epoch']:>5} {row['lr']:>10.4g} {row['batch_size']:>7} {m:>8} "
            f"{row['noise_scale']:>12.4g} {row['updates_in_epoch']:>10} {row['updates']:>9}"
        )
    last = rows[-1]
    lines.append(
        f"total: {last['epoch']} epochs, {last['updates']} updates, {last['samples']} samples "
        f"(N={n_train}; each epoch uses floor(N/B) full batches)"
    )
    return "\n".join(lines)


def lr_scaling_note(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    """One line saying how the linear scaling rule (Goyal et al. 2017) set the lr, or ""."""
    if not cfg.schedule.get("scale_lr_with_batch", False):
        return ""
    base, batch, ref = cfg.optimizer.lr, rows[0]["batch_size"], cfg.schedule.reference_batch
    return (
        f"linear scaling (Goyal et al. 2017): lr = {base:g} x {batch} / {ref} = "
        f"{base * batch / ref:.4g} before warmup and decay"
    )


def print_plan(cfg: DictConfig) -> None:
    """Validate ``cfg`` and print its plan; for the CLI's ``+plan=true``."""
    rows, data = _plan_and_data(cfg)
    lines = [format_plan(rows, len(data.train)), evaluation_note(data)]
    print("\n".join(line for line in [*lines, lr_scaling_note(cfg, rows)] if line))

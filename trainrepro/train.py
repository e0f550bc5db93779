"""The training loop: one explicit pass over epochs and updates, in the spirit of nanoGPT.

The schedule is a pure function of (epoch, update), read at every update for the learning rate
and momentum and at every epoch start for the batch size; the data order is a pure function of
(seed, epoch). A checkpoint at each epoch end is therefore all that resume needs.
Instruments plug in as callbacks (trainrepro.callbacks), called at fixed points below.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from trainrepro.build import Run, build_run
from trainrepro.checkpoint import (
    CHECKPOINT_NAME,
    Progress,
    load_checkpoint,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from trainrepro.errors import ConfigError
from trainrepro.noise import noise_scale
from trainrepro.optim import get_momentum, set_lr, set_momentum
from trainrepro.records import (
    atomic_write_text,
    device_description,
    git_revision,
    versions,
    write_json,
    write_metrics,
)

# Keys that may differ between a run and its resumption without changing its numbers.
RESUME_FREE_KEYS = ("resume", "progress", "eval_batch_size")
# Keys added after checkpoints were first written, with the value an older checkpoint implies.
ADDED_KEYS = {"callbacks": {}}
# How often (in updates) the loss is brought to the host: each .item() waits for the GPU.
SYNC_EVERY = 25


def train(cfg: DictConfig, run_dir: Path, *, stop_after_epoch: int | None = None) -> dict:
    """Train the run described by ``cfg`` in ``run_dir``; return the summary it writes.

    ``stop_after_epoch`` ends the process's work early as a kill would, leaving a resumable
    run (used by the resume test).
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    config = OmegaConf.to_container(cfg, resolve=True)
    if not cfg.resume and (ckpt_path.exists() or (run_dir / "metrics.csv").exists()):
        raise ConfigError(
            "resume", False, f"{run_dir} already holds a run; pass resume=true to continue it"
        )
    if cfg.resume and not ckpt_path.exists():
        raise ConfigError("resume", True, f"no {CHECKPOINT_NAME} in {run_dir} to resume from")

    run = build_run(cfg)
    progress = Progress()
    if cfg.resume:
        progress = _restore(run, load_checkpoint(ckpt_path), config)

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    for note in run.data.notes:
        print(f"note: {note}")
    n_params = sum(p.numel() for p in run.model.parameters())
    print(f"run: {run_dir}  device: {device_description(run.device)}  params: {n_params:,}")
    for callback in run.callbacks:
        callback.start(run, run_dir)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    status, diverged_at = "completed", None
    for epoch in range(progress.epoch, cfg.epochs):
        row, diverged_at = _train_epoch(run, cfg, epoch, progress)
        progress.rows.append(row)
        progress.epoch = epoch + 1
        for callback in run.callbacks:
            callback.end_epoch(run, progress.epoch, row)
        write_metrics(run_dir / "metrics.csv", progress.rows)
        if diverged_at is not None:
            # The checkpoint keeps the last finite epoch: a resume replays the divergence.
            status = "diverged"
            print(f"diverged: non-finite loss by update {diverged_at}; run stopped")
            break
        save_checkpoint(
            ckpt_path,
            model=run.model,
            optimizer=run.optimizer,
            scaler=run.scaler,
            progress=progress,
            config=config,
            callbacks=[callback.state_dict() for callback in run.callbacks],
        )
        if stop_after_epoch is not None and progress.epoch >= stop_after_epoch:
            status = "interrupted"
            break

    summary = {
        "status": status,
        "diverged": status == "diverged",
        "diverged_at_update": diverged_at,
        "epochs_completed": progress.epoch,
        "final": progress.rows[-1] if progress.rows else {},
        "best_test_acc": max((r["test_acc"] for r in progress.rows), default=None),
        "num_params": n_params,
        "notes": run.data.notes,
        "device": device_description(run.device),
        "versions": versions(),
        "git": git_revision(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(run_dir / "summary.json", summary)
    for callback in run.callbacks:
        callback.finish(run_dir, status)
    return summary


def _restore(run: Run, ckpt: dict[str, Any], config: dict[str, Any]) -> Progress:
    saved = {**ADDED_KEYS, **ckpt["config"]}
    changed = sorted(
        k
        for k in set(saved) | set(config)
        if k not in RESUME_FREE_KEYS and saved.get(k) != config.get(k)
    )
    if changed:
        key = changed[0]
        raise ConfigError(
            key,
            config.get(key),
            f"differs from the checkpoint's ({saved.get(key)}); a resumed run must keep its config"
            + (f" (also changed: {', '.join(changed[1:])})" if len(changed) > 1 else ""),
        )
    run.model.load_state_dict(ckpt["model"])
    restore_optimizer(run.optimizer, ckpt["optimizer"])
    if run.scaler is not None and ckpt["scaler"] is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    # The config check above makes the callbacks, and so their order, those of the checkpoint.
    for callback, state in zip(run.callbacks, ckpt.get("callbacks", []), strict=True):
        callback.load_state_dict(state)
    return Progress(**ckpt["progress"])


def _train_epoch(
    run: Run, cfg: DictConfig, epoch: int, progress: Progress
) -> tuple[dict[str, Any], int | None]:
    """One epoch of updates then evaluation; returns its metrics row and the divergence update."""
    model, optimizer, schedule = run.model, run.optimizer, run.schedule
    batch_size = schedule(float(epoch), progress.updates).batch_size
    n_steps = run.train_loader.num_batches(batch_size)
    n_train = len(run.train_loader)
    start = time.perf_counter()

    model.train()
    loss_sum = torch.zeros((), device=run.device, dtype=torch.float64)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    seen, diverged_at = 0, None
    bar = tqdm(
        run.train_loader.batches(epoch, batch_size),
        total=n_steps,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    point = schedule(float(epoch), progress.updates)
    for i, (x, y) in enumerate(bar):
        point = schedule(epoch + i / n_steps, progress.updates)
        set_lr(optimizer, point.lr)
        if point.momentum is not None:
            set_momentum(optimizer, point.momentum)
        logits, loss = _update(run, x, y, cfg.max_micro_batch, update=progress.updates + 1)
        progress.updates += 1
        progress.samples += len(y)
        progress.grad_evals += len(y)
        seen += len(y)
        loss_sum += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if run.device.type == "cpu" or (i + 1) % SYNC_EVERY == 0 or i + 1 == n_steps:
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                diverged_at = progress.updates
                break
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                acc=f"{100 * correct.item() / seen:.1f}",
                lr=f"{point.lr:.3g}",
                bs=batch_size,
                refresh=False,
            )
    bar.close()
    train_seconds = time.perf_counter() - start

    test_loss, test_acc = evaluate(run, run.test_loader, cfg.eval_batch_size)
    val_loss, val_acc = (
        evaluate(run, run.val_loader, cfg.eval_batch_size) if run.val_loader else (None, None)
    )
    epoch_seconds = time.perf_counter() - start
    progress.wall_seconds += epoch_seconds
    momentum = point.momentum if point.momentum is not None else get_momentum(optimizer)
    row = {
        "epoch": epoch + 1,
        "updates": progress.updates,
        "samples": progress.samples,
        "grad_evals": progress.grad_evals,
        "lr": point.lr,
        "batch_size": batch_size,
        "momentum": momentum,
        "noise_scale": noise_scale(point.lr, momentum, n_train, batch_size),
        "train_loss": loss_sum.item() / max(seen, 1),
        "train_acc": 100.0 * correct.item() / max(seen, 1),
        "test_loss": test_loss,
        "test_acc": test_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "epoch_seconds": epoch_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": progress.wall_seconds,
    }
    if cfg.progress:
        shown = {k: row[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
        print(
            f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        )
    return row, diverged_at


def _update(
    run: Run,
    x: torch.Tensor,
    y: torch.Tensor,
    max_micro_batch: int | None,
    *,
    update: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One parameter update on the batch; returns its logits and mean loss, detached.

    A batch larger than ``max_micro_batch`` is split, and the gradients of the pieces,
    each weighted by its share of the batch, are summed before the single optimizer step.
    ``update`` (from 1 over the run) is what the callbacks' ``after_backward`` is told.
    """
    optimizer = run.optimizer
    optimizer.zero_grad(set_to_none=True)
    micro = len(y) if max_micro_batch is None else min(max_micro_batch, len(y))
    logits, losses = [], []
    for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
        with _autocast(run):
            out = run.model(xm)
            loss = F.cross_entropy(out, ym) * (len(ym) / len(y))
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
        else:
            loss.backward()
        logits.append(out.detach())
        losses.append(loss.detach())
    if run.callbacks:
        if run.scaler is not None:  # callbacks see true gradients; step() won't unscale twice
            run.scaler.unscale_(optimizer)
        for callback in run.callbacks:
            callback.after_backward(run, update)
    if run.scaler is not None:
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        optimizer.step()
    return torch.cat(logits), torch.stack(losses).sum()


@torch.inference_mode()
def evaluate(run: Run, loader: Any, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over every example of ``loader``."""
    run.model.eval()
    loss_sum = torch.zeros((), device=run.device, dtype=torch.float64)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    for x, y in loader.batches(0, batch_size, shuffle=False, drop_last=False):
        with _autocast(run):
            logits = run.model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(loader)
    return loss_sum.item() / n, 100.0 * correct.item() / n


def _autocast(run: Run) -> contextlib.AbstractContextManager:
    if run.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run.device.type, dtype=run.autocast_dtype)

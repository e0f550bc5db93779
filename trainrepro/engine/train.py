"""The training loop: one explicit pass over epochs and updates, in the spirit of nanoGPT.

The schedule is a pure function of (epoch, update), read at every update for the learning rate
and momentum and at every epoch start for the batch size; the data order is a pure function of
(seed, epoch). A checkpoint that records the position inside the epoch is therefore all that
resume needs: it is written at each epoch end, every ``checkpoint_every`` updates, and when a
SIGTERM or SIGINT asks the run to stop (trainrepro.engine.preemption).
Instruments plug in as callbacks (trainrepro.engine.run), called at fixed points below.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from trainrepro.engine import distributed, lifecycle
from trainrepro.engine.build import build_run, epoch_batch_sizes
from trainrepro.engine.checkpoint import (
    CHECKPOINT_NAME,
    Progress,
    check_same_config,
    load_checkpoint,
    restore_model,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from trainrepro.engine.preemption import StopFlag, stop_on_signals
from trainrepro.engine.records import (
    atomic_write_text,
    device_description,
    write_json,
    write_metrics,
)
from trainrepro.engine.run import Run
from trainrepro.errors import ConfigError
from trainrepro.optim.factory import get_momentum, set_lr, set_momentum
from trainrepro.optim.update_rules import autocast
from trainrepro.schedules.noise import noise_scale

# The loop's sync points (every SYNC_EVERY updates, a checkpoint, a stop, the epoch's end) bring
# the loss and accuracy summed on the device to the host; no other read in an update waits for
# the GPU (tests/test_host_sync.py). The same on every device, so CPU tests hold CUDA's loop.
SYNC_EVERY = 25


def train(
    cfg: DictConfig,
    run_dir: Path,
    *,
    stop_after_epoch: int | None = None,
    stop_after_update: int | None = None,
    command: list[str] | None = None,
) -> dict:
    """Train the run described by ``cfg`` in ``run_dir``; return the summary it writes.

    ``stop_after_epoch`` / ``stop_after_update`` stop the run as a SIGTERM arriving during that
    epoch's last update / that update would (the resume tests use them). ``command`` (this
    invocation's overrides) joins earlier invocations' in summary.json and makes the command
    printed to continue an interrupted run. A completed run is left as it is on resume.
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
    every = cfg.get("checkpoint_every")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every <= 0):
        raise ConfigError("checkpoint_every", every, "must be a positive number of updates or null")
    estimate_over_s = lifecycle.estimate_threshold()

    world = distributed.init_from_env()
    main = world.is_main  # under torchrun only rank 0 writes and prints
    say = partial(print, flush=True) if main else (lambda *a, **k: None)  # flushed for logs
    if cfg.resume and (done := lifecycle.completed_run(run_dir, config)) is not None:
        n = done["epochs_completed"]
        say(f"run in {run_dir} is complete (epochs {n} of {cfg.epochs}): nothing to do")
        return done
    previous = lifecycle.read_summary(run_dir) if cfg.resume else {}
    with stop_on_signals(StopFlag()) as stop:
        run = build_run(cfg)
        sizes = epoch_batch_sizes(run.schedule, cfg.epochs, len(run.train_loader))
        if world.active:
            distributed.prepare(run.model, sizes, sync=bool(cfg.normalization.get("sync", False)))
        progress = Progress()
        if cfg.resume:
            progress = _restore(run, ckpt_path, config)
        total = sum(run.train_loader.num_batches(size) for size in sizes)
        clock = lifecycle.Estimate(estimate_over_s, total, command, say)

        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            lifecycle.remove_stale_temporaries(run_dir, say)
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        for note in run.data.notes:
            say(f"note: {note}")
        n_params = sum(p.numel() for p in run.model.parameters())
        ranks = f"  ranks: {world.size}" if world.active else ""
        say(
            f"run: {run_dir}  device: {device_description(run.device)}{ranks}  params: {n_params:,}"
        )
        if cfg.resume:
            at = f"epoch {progress.epoch + 1}, batch {progress.batch}"
            say(f"resumed from {at} (update {progress.updates})")
        for callback in run.callbacks:
            callback.start(run, run_dir)

        def checkpoint() -> None:
            if not main:
                return
            save_checkpoint(
                ckpt_path,
                model=run.model,
                optimizer=run.optimizer,
                scaler=run.scaler,
                progress=progress,
                config=config,
                callbacks=[callback.state_dict() for callback in run.callbacks],
                update_rule=run.rule.state_dict(),
            )

        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        status, diverged_at = "completed", None
        while progress.epoch < cfg.epochs:
            if stop:  # a signal before this epoch's first update: stop where we are
                checkpoint()
                status = "interrupted"
                break
            diverged_at = _train_epoch(
                run, cfg, progress, stop, checkpoint, clock, stop_after_update
            )
            if stop and diverged_at is None:
                checkpoint()  # mid-epoch: the position says which batch comes next
                status = "interrupted"
                break
            row = _end_epoch(run, cfg, progress, evaluate_here=main)
            for callback in run.callbacks:
                callback.end_epoch(run, progress.epoch, row)
            if main:
                write_metrics(run_dir / "metrics.csv", progress.rows)
            if diverged_at is not None:
                # The checkpoint keeps the last finite state: a resume replays the divergence.
                status = "diverged"
                say(f"diverged: non-finite loss by update {diverged_at}; run stopped")
                break
            checkpoint()
            if stop_after_epoch is not None and progress.epoch >= stop_after_epoch:
                stop.request()
            if stop and progress.epoch < cfg.epochs:
                status = "interrupted"
                break

        summary = lifecycle.summary(
            status=status,
            diverged_at=diverged_at,
            progress=progress,
            signal=stop.name if status == "interrupted" else None,
            run=run,
            ranks=world.size,
            commands=lifecycle.commands_so_far(previous, command),
            started=started,
        )
        if main:
            write_json(run_dir / lifecycle.SUMMARY_NAME, summary)
        if status == "interrupted":
            say(lifecycle.interrupted_message(stop.name, progress, run_dir, command))
        for callback in run.callbacks:
            callback.finish(run_dir, status)
    return summary


def _restore(run: Run, ckpt_path: Path, config: dict[str, Any]) -> Progress:
    """Load the checkpoint into the built run, refusing one whose config or model differs."""
    ckpt = load_checkpoint(ckpt_path)
    check_same_config(ckpt["config"], config)
    restore_model(run.model, ckpt["model"], ckpt_path)
    try:
        restore_optimizer(run.optimizer, ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise ConfigError("checkpoint", ckpt_path, f"optimizer state does not fit: {e}") from None
    if run.scaler is not None and ckpt.get("scaler") is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    run.rule.load_state_dict(ckpt.get("update_rule") or {})
    restore_rng(ckpt["rng"])
    # The config check above makes the callbacks, and so their order, those of the checkpoint.
    for callback, state in zip(run.callbacks, ckpt.get("callbacks", []), strict=True):
        callback.load_state_dict(state)
    return Progress(**ckpt["progress"])


def _train_epoch(
    run: Run,
    cfg: DictConfig,
    progress: Progress,
    stop: StopFlag,
    checkpoint: Any,
    clock: lifecycle.Estimate,
    stop_after_update: int | None = None,
) -> int | None:
    """Train epoch ``progress.epoch`` from batch ``progress.batch`` to its end, or until ``stop``
    is raised; returns the update by which the loss went non-finite, if it did. ``clock`` is
    told the updates done wherever the loss comes to the host (it adds no sync of its own).

    The running totals live in ``progress`` whenever a checkpoint is written, so a resumed epoch
    accumulates onto exactly the same float64 sum and yields the same metrics row.
    """
    model, optimizer, schedule = run.model, run.optimizer, run.schedule
    epoch = progress.epoch
    if progress.batch_size is None:
        progress.batch_size = schedule(float(epoch), progress.updates).batch_size
    batch_size = progress.batch_size
    n_steps = run.train_loader.num_batches(batch_size)
    every = cfg.get("checkpoint_every")
    start = time.perf_counter()

    if progress.batch == 0:  # not again when resuming inside the epoch
        progress.grad_evals += run.rule.start_epoch(run, epoch, batch_size, cfg.max_micro_batch)
    model.train()
    world = distributed.world()
    # Under torchrun each rank sums its own slices; rank 0 also carries the totals so far, so
    # the sum over ranks is the epoch's total on any number of ranks.
    carried = world.is_main
    loss_sum = torch.tensor(
        progress.loss_sum if carried else 0.0, device=run.device, dtype=torch.float64
    )
    correct = torch.tensor(progress.correct if carried else 0, device=run.device)
    diverged_at = None
    bar = tqdm(
        run.train_loader.batches(
            epoch, batch_size, start_batch=progress.batch, shard=(world.rank, world.size)
        ),
        initial=progress.batch,
        total=n_steps,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not (cfg.progress and world.is_main),
        leave=False,
        dynamic_ncols=True,
    )
    for i, (x, y) in enumerate(bar, start=progress.batch):
        point = schedule(epoch + i / n_steps, progress.updates)
        set_lr(optimizer, point.lr)
        if point.momentum is not None:
            set_momentum(optimizer, point.momentum)
        logits, loss, grad_evals = _update(
            run, x, y, cfg.max_micro_batch, update=progress.updates + 1
        )
        progress.batch = i + 1
        progress.updates += 1
        progress.samples += len(y) * world.size
        progress.grad_evals += grad_evals * world.size
        progress.seen += len(y) * world.size
        loss_sum += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if progress.updates == stop_after_update:
            stop.request()
        due = every is not None and progress.updates % every == 0 and i + 1 < n_steps
        synced = due or (i + 1) % SYNC_EVERY == 0 or i + 1 == n_steps
        # torchrun: the ranks agree on a stop at sync points, not by a read per update
        if world.active and synced and distributed.any_rank(bool(stop))[0] and not stop:
            stop.request()  # another rank got the signal: every rank stops here
        if (stop and not world.active) or synced:
            _totals(progress, loss_sum, correct)  # the sync point: two reads
            clock.tick(progress.updates)
            mean_loss = progress.loss_sum / progress.seen
            if not math.isfinite(mean_loss):
                diverged_at = progress.updates
                break
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                acc=f"{100 * progress.correct / progress.seen:.1f}",
                lr=f"{point.lr:.3g}",
                bs=batch_size,
                refresh=False,
            )
            if stop:
                break
            if due:
                progress.train_seconds += time.perf_counter() - start
                start = time.perf_counter()
                checkpoint()
        elif run.device.type == "cpu":
            clock.tick(progress.updates)  # a CPU update is done when it returns: times no queue
    bar.close()
    _totals(progress, loss_sum, correct)
    progress.train_seconds += time.perf_counter() - start
    return diverged_at


def _totals(progress: Progress, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
    """The epoch's running loss sum and correct count so far, over every rank, into progress."""
    loss_sum, correct = distributed.sum_over_ranks(loss_sum, correct)
    progress.loss_sum, progress.correct = loss_sum.item(), int(correct.item())


def _end_epoch(
    run: Run, cfg: DictConfig, progress: Progress, *, evaluate_here: bool = True
) -> dict[str, Any]:
    """Evaluate after the epoch's last update, record its row in ``progress`` and return it.

    ``evaluate_here=False`` (ranks other than 0 under torchrun, which write nothing) skips the
    evaluation and leaves its columns empty.
    """
    start = time.perf_counter()
    test_loss = test_acc = val_loss = val_acc = None
    if evaluate_here:
        test_loss, test_acc = evaluate(run, run.test_loader, cfg.eval_batch_size)
        if run.val_loader:
            val_loss, val_acc = evaluate(run, run.val_loader, cfg.eval_batch_size)
    epoch_seconds = progress.train_seconds + time.perf_counter() - start
    progress.wall_seconds += epoch_seconds
    batch_size = progress.batch_size
    n_steps = run.train_loader.num_batches(batch_size)
    # The schedule as at the epoch's last update, as the loop read it.
    point = run.schedule(progress.epoch + (progress.batch - 1) / n_steps, progress.updates - 1)
    momentum = point.momentum if point.momentum is not None else get_momentum(run.optimizer)
    seen = max(progress.seen, 1)
    row = {
        "epoch": progress.epoch + 1,
        "updates": progress.updates,
        "samples": progress.samples,
        "grad_evals": progress.grad_evals,
        "lr": point.lr,
        "batch_size": batch_size,
        "momentum": momentum,
        "noise_scale": noise_scale(point.lr, momentum, len(run.train_loader), batch_size),
        "train_loss": progress.loss_sum / seen,
        "train_acc": 100.0 * progress.correct / seen,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "epoch_seconds": epoch_seconds,
        "train_seconds": progress.train_seconds,
        "wall_seconds": progress.wall_seconds,
    }
    if evaluate_here:  # with progress=false too: only the bar goes; flushed for log files
        shown = {k: row[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
        line = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        print(f"epoch {row['epoch']}/{cfg.epochs} {line}", flush=True)
    progress.end_epoch(row)
    return row


def _update(
    run: Run,
    x: torch.Tensor,
    y: torch.Tensor,
    max_micro_batch: int | None,
    *,
    update: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One parameter update on the batch; returns its logits and mean loss, detached, and the
    gradient evaluations the run's update rule spent on it (trainrepro.optim.update_rules).

    A batch larger than ``max_micro_batch`` is split and the pieces' gradients accumulated
    before the single optimizer step. ``update`` (from 1 over the run) is what the callbacks'
    ``after_backward`` and ``after_step`` are told.
    """
    optimizer = run.optimizer
    optimizer.zero_grad(set_to_none=True)
    logits, loss, grad_evals = run.rule.gradients(run, x, y, max_micro_batch)
    distributed.average_gradients(run.model)  # torchrun: the mean over the global batch
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
    for callback in run.callbacks:
        callback.after_step(run, update, loss)
    return logits, loss, grad_evals


@torch.inference_mode()
def evaluate(run: Run, loader: Any, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over every example of ``loader``."""
    run.model.eval()
    loss_sum = torch.zeros((), device=run.device, dtype=torch.float64)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    for x, y in loader.batches(0, batch_size, shuffle=False, drop_last=False):
        with autocast(run):
            logits = run.model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(loader)
    return loss_sum.item() / n, 100.0 * correct.item() / n

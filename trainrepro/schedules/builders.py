"""Validated builders, one per ``conf/schedule/<name>.yaml`` (its ``_target_``).

Runtime kwargs ``lr``, ``batch_size``, ``momentum`` and ``epochs`` come from the run; every
builder also takes the linear-warmup keys, the batch-scaling keys of Smith et al. (2018) and
the linear lr-scaling keys of Goyal et al. (2017, ``scale_lr_with_batch``, ``reference_batch``).
A bad value raises ``ConfigError`` naming ``schedule.<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError, check_bool, check_int, check_number
from trainrepro.schedules.curves import (
    CYCLIC_MODES,
    SGDR,
    STEP_MODES,
    Constant,
    Cosine,
    Cyclic,
    Exponential,
    Schedule,
    Step,
    Warmup,
)
from trainrepro.schedules.noise import scaled_batch_size

# ---------------------------------------------------------------- validation
_Runtime = tuple[float, int, float | None, int]


def _check_runtime(lr: float, batch_size: int, momentum: float | None, epochs: int) -> _Runtime:
    lr = check_number("optimizer.lr", lr, 0.0, low_open=True)
    batch_size = check_int("batch_size", batch_size, 1)
    if momentum is not None:
        momentum = check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    epochs = check_int("epochs", epochs, 1)
    return lr, batch_size, momentum, epochs


def _scale(
    runtime: _Runtime,
    scale_batch_with: Sequence[str],
    reference_lr: float | None,
    reference_momentum: float | None,
) -> _Runtime:
    """``runtime`` with the initial batch size from ``scaled_batch_size``; shared by every
    builder, before its own checks, so e.g. max_batch_size is compared with the scaled batch."""
    lr, batch_size, momentum, epochs = runtime
    batch_size = scaled_batch_size(
        batch_size,
        lr,
        momentum,
        rules=scale_batch_with,
        reference_lr=reference_lr,
        reference_momentum=reference_momentum,
    )
    return lr, batch_size, momentum, epochs


def _scale_lr(
    runtime: _Runtime,
    scale_lr_with_batch: bool,
    reference_batch: int,
    scale_batch_with: Sequence[str],
) -> _Runtime:
    """Goyal et al.'s (2017) linear scaling rule: lr x B / reference_batch, B the schedule's
    initial batch; after ``_scale``, before every other check (e.g. min_lr < lr)."""
    check_bool("schedule.scale_lr_with_batch", scale_lr_with_batch)
    reference_batch = check_int("schedule.reference_batch", reference_batch, 1)
    if not scale_lr_with_batch:
        return runtime
    if "lr" in scale_batch_with:  # B from lr and lr from B: one of the two must be the input
        raise ConfigError(
            "schedule.scale_lr_with_batch", True, "cannot be combined with scale_batch_with=[lr]"
        )
    lr, batch_size, momentum, epochs = runtime
    return lr * batch_size / reference_batch, batch_size, momentum, epochs


def _check_min_lr(min_lr: float, lr: float) -> float:
    min_lr = check_number("schedule.min_lr", min_lr, 0.0)
    if min_lr >= lr:
        raise ConfigError("schedule.min_lr", min_lr, f"must be < optimizer.lr={lr:g}")
    return min_lr


def _warmup(
    inner: Schedule, warmup_epochs: float, warmup_steps: int, warmup_start_factor: float
) -> Schedule:
    """Wrap ``inner`` in a Warmup when one is configured; shared by every builder."""
    warmup_epochs = check_number("schedule.warmup_epochs", warmup_epochs, 0.0, inner.epochs)
    warmup_steps = check_int("schedule.warmup_steps", warmup_steps, 0)
    start = check_number("schedule.warmup_start_factor", warmup_start_factor, 0.0, 1.0)
    if warmup_epochs > 0 and warmup_steps > 0:
        raise ConfigError(
            "schedule.warmup_steps", warmup_steps, "set warmup_epochs or warmup_steps, not both"
        )
    if warmup_epochs == 0 and warmup_steps == 0:
        return inner
    return Warmup(inner=inner, epochs=warmup_epochs, steps=warmup_steps, start_factor=start)


# ---------------------------------------------------------------- builders
def constant(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """The base lr, batch size and momentum throughout."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    inner = Constant(*runtime)
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


def step(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    milestones: Sequence[float] = (60, 120, 160),
    factor: float = 0.2,
    mode: str = "decay_lr",
    max_batch_size: int | None = None,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """Step decay (WRN recipe, Zagoruyko & Komodakis 2016) or batch growth (Smith et al. 2018)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
        raise ConfigError("schedule.milestones", milestones, "must be a list of epochs")
    ms = tuple(check_number("schedule.milestones", m, 0.0) for m in milestones)
    if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
        raise ConfigError("schedule.milestones", list(milestones), "must be strictly increasing")
    if ms and not (ms[0] > 0 and ms[-1] < epochs):
        raise ConfigError(
            "schedule.milestones", list(milestones), f"must lie within (0, epochs={epochs})"
        )
    factor = check_number("schedule.factor", factor, 0.0, 1.0, low_open=True)
    if mode not in STEP_MODES:
        raise ConfigError("schedule.mode", mode, f"unknown; valid: {', '.join(STEP_MODES)}")
    if mode != "decay_lr" and any(m != int(m) for m in ms):
        # The trainer reads the batch size only at the start of an epoch.
        raise ConfigError(
            "schedule.milestones",
            list(milestones),
            f"mode={mode} changes the batch size, which can change only at whole epochs",
        )
    if mode == "hybrid":
        if max_batch_size is None:
            raise ConfigError("schedule.max_batch_size", None, "required when mode=hybrid")
        check_int("schedule.max_batch_size", max_batch_size, runtime[1])
    elif max_batch_size is not None:
        raise ConfigError("schedule.max_batch_size", max_batch_size, "used only with mode=hybrid")
    inner = Step(*runtime, milestones=ms, factor=factor, mode=mode, max_batch_size=max_batch_size)
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


def exponential(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    gamma: float = 0.97,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """``lr * gamma**epoch``, continuous in the fractional epoch."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    gamma = check_number("schedule.gamma", gamma, 0.0, 1.0, low_open=True)
    inner = Exponential(*runtime, gamma=gamma)
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


def cosine(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    min_lr: float = 0.0,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """Cosine annealing to ``min_lr`` over the run (Loshchilov & Hutter 2017, no restarts)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    inner = Cosine(*runtime, min_lr=_check_min_lr(min_lr, runtime[0]))
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


def sgdr(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    period: float = 10.0,
    period_mult: float = 2.0,
    min_lr: float = 0.0,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """SGDR: cosine annealing with warm restarts (Loshchilov & Hutter 2017)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    period = check_number("schedule.period", period, 0.0, epochs, low_open=True)
    period_mult = check_number("schedule.period_mult", period_mult, 1.0)
    min_lr = _check_min_lr(min_lr, runtime[0])
    inner = SGDR(*runtime, period=period, period_mult=period_mult, min_lr=min_lr)
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


def cyclic(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    min_lr: float | None = None,
    half_period: float = 4.0,
    mode: str = "triangular",
    min_momentum: float | None = None,
    max_momentum: float | None = None,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Schedule:
    """Cyclical learning rates (Smith 2017) between ``min_lr`` and the configured lr.

    ``min_lr: None`` means lr/4, the paper's rule of thumb (base lr 3-4x below the max).
    ``min_momentum``/``max_momentum`` cycle momentum inversely to lr (Smith 2018).
    """
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
    runtime = _scale(runtime, scale_batch_with, reference_lr, reference_momentum)
    runtime = _scale_lr(runtime, scale_lr_with_batch, reference_batch, scale_batch_with)
    min_lr = runtime[0] / 4.0 if min_lr is None else _check_min_lr(min_lr, runtime[0])
    half_period = check_number("schedule.half_period", half_period, 0.0, low_open=True)
    if mode not in CYCLIC_MODES:
        raise ConfigError("schedule.mode", mode, f"unknown; valid: {', '.join(CYCLIC_MODES)}")
    if (min_momentum is None) != (max_momentum is None):
        key = "schedule.min_momentum" if min_momentum is None else "schedule.max_momentum"
        raise ConfigError(key, None, "set both min_momentum and max_momentum, or neither")
    if min_momentum is not None and max_momentum is not None:
        if runtime[2] is None:
            raise ConfigError(
                "schedule.min_momentum", min_momentum, "the optimizer has no momentum to cycle"
            )
        min_momentum = check_number("schedule.min_momentum", min_momentum, 0.0, 1.0, high_open=True)
        max_momentum = check_number("schedule.max_momentum", max_momentum, 0.0, 1.0, high_open=True)
        if min_momentum > max_momentum:
            raise ConfigError(
                "schedule.min_momentum", min_momentum, f"must be <= max_momentum={max_momentum}"
            )
    inner = Cyclic(
        *runtime,
        min_lr=min_lr,
        half_period=half_period,
        mode=mode,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
    )
    return _warmup(inner, warmup_epochs, warmup_steps, warmup_start_factor)


ScheduleBuilder = Callable[..., Schedule]
SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
    "sgdr": sgdr,
    "cyclic": cyclic,
}


def create_schedule(name: str, **kwargs: Any) -> Schedule:
    """Build schedule ``name`` from Python (the CLI goes through the YAML)."""
    if name not in SCHEDULES:
        raise ConfigError("schedule", name, f"unknown; valid: {', '.join(sorted(SCHEDULES))}")
    builder = SCHEDULES[name]
    check_kwargs(builder, "schedule", kwargs)
    return builder(**kwargs)

"""Validated builders, one per ``conf/schedule/<name>.yaml`` (its ``_target_``).

Runtime kwargs ``lr``, ``batch_size``, ``momentum`` and ``epochs`` come from the run; every
builder also takes the linear-warmup keys, the batch-scaling keys of Smith et al. (2018) and
the linear lr-scaling keys of Goyal et al. (2017, ``scale_lr_with_batch``, ``reference_batch``).
A bad value raises ``ConfigError`` naming ``schedule.<key>``.

Those shared keys are declared once, by the signatures of :func:`_runtime` and :func:`_warmup`;
``@_builder`` turns ``fn(runtime, *, <own keys>) -> Schedule`` into a builder whose signature
(read by ``check_kwargs``) is the runtime keys, ``fn``'s own keys and the shared ones, and which
checks and scales the runtime, calls ``fn``, then wraps the result in the configured warmup.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from trainrepro.config import build_named
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


# ---------------------------------------------------------------- shared keys
class Runtime(NamedTuple):
    """The run's values after the shared checks and scaling; the curves' first four fields."""

    lr: float
    batch_size: int
    momentum: float | None
    epochs: int


def _runtime(
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float | None = None,
    scale_batch_with: Sequence[str] = (),
    reference_lr: float | None = None,
    reference_momentum: float | None = None,
    scale_lr_with_batch: bool = False,
    reference_batch: int = 256,
) -> Runtime:
    """Check the run's values, then scale them, before every builder's own checks (so e.g.
    max_batch_size is compared with the scaled batch and min_lr with the scaled lr).

    The initial batch size comes from ``scaled_batch_size`` (Smith et al. 2018, Sec. 5); then,
    with ``scale_lr_with_batch``, Goyal et al.'s (2017) linear scaling rule gives lr x B /
    reference_batch, B that initial batch.
    """
    lr = check_number("optimizer.lr", lr, 0.0, low_open=True)
    batch_size = check_int("batch_size", batch_size, 1)
    if momentum is not None:
        momentum = check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    epochs = check_int("epochs", epochs, 1)
    batch_size = scaled_batch_size(
        batch_size,
        lr,
        momentum,
        rules=scale_batch_with,
        reference_lr=reference_lr,
        reference_momentum=reference_momentum,
    )
    check_bool("schedule.scale_lr_with_batch", scale_lr_with_batch)
    reference_batch = check_int("schedule.reference_batch", reference_batch, 1)
    if scale_lr_with_batch and "lr" in scale_batch_with:
        # B from lr and lr from B: one of the two must be the input
        raise ConfigError(
            "schedule.scale_lr_with_batch", True, "cannot be combined with scale_batch_with=[lr]"
        )
    if scale_lr_with_batch:
        lr = lr * batch_size / reference_batch
    return Runtime(lr, batch_size, momentum, epochs)


def _warmup(
    inner: Schedule,
    *,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
) -> Schedule:
    """Wrap ``inner`` in a Warmup when one is configured."""
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


def _keys(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


_RUNTIME_KEYS, _WARMUP_KEYS = _keys(_runtime), _keys(_warmup)


def _builder(fn: Callable[..., Schedule]) -> Callable[..., Schedule]:
    """The builder of ``fn(runtime, *, <own keys>)``: see the module docstring."""
    own = _keys(fn)
    signature = inspect.Signature(
        [*_RUNTIME_KEYS[:4], *own, *_WARMUP_KEYS, *_RUNTIME_KEYS[4:]],
        return_annotation=Schedule,
    )

    @functools.wraps(fn)
    def build(**kwargs: Any) -> Schedule:
        bound = signature.bind(**kwargs)  # a TypeError for a missing or unknown key
        bound.apply_defaults()
        args = bound.arguments
        runtime = _runtime(**{p.name: args[p.name] for p in _RUNTIME_KEYS})
        inner = fn(runtime, **{p.name: args[p.name] for p in own})
        return _warmup(inner, **{p.name: args[p.name] for p in _WARMUP_KEYS})

    build.__signature__ = signature  # type: ignore[attr-defined]
    return build


def _check_min_lr(min_lr: float, lr: float) -> float:
    min_lr = check_number("schedule.min_lr", min_lr, 0.0)
    if min_lr >= lr:
        raise ConfigError("schedule.min_lr", min_lr, f"must be < optimizer.lr={lr:g}")
    return min_lr


# ---------------------------------------------------------------- builders
@_builder
def constant(runtime: Runtime) -> Schedule:
    """The base lr, batch size and momentum throughout."""
    return Constant(*runtime)


@_builder
def step(
    runtime: Runtime,
    *,
    milestones: Sequence[float] = (60, 120, 160),
    factor: float = 0.2,
    mode: str = "decay_lr",
    max_batch_size: int | None = None,
) -> Schedule:
    """Step decay (WRN recipe, Zagoruyko & Komodakis 2016) or batch growth (Smith et al. 2018)."""
    epochs = runtime.epochs
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
        check_int("schedule.max_batch_size", max_batch_size, runtime.batch_size)
    elif max_batch_size is not None:
        raise ConfigError("schedule.max_batch_size", max_batch_size, "used only with mode=hybrid")
    return Step(*runtime, milestones=ms, factor=factor, mode=mode, max_batch_size=max_batch_size)


@_builder
def exponential(runtime: Runtime, *, gamma: float = 0.97) -> Schedule:
    """``lr * gamma**epoch``, continuous in the fractional epoch."""
    gamma = check_number("schedule.gamma", gamma, 0.0, 1.0, low_open=True)
    return Exponential(*runtime, gamma=gamma)


@_builder
def cosine(runtime: Runtime, *, min_lr: float = 0.0) -> Schedule:
    """Cosine annealing to ``min_lr`` over the run (Loshchilov & Hutter 2017, no restarts)."""
    return Cosine(*runtime, min_lr=_check_min_lr(min_lr, runtime.lr))


@_builder
def sgdr(
    runtime: Runtime, *, period: float = 10.0, period_mult: float = 2.0, min_lr: float = 0.0
) -> Schedule:
    """SGDR: cosine annealing with warm restarts (Loshchilov & Hutter 2017)."""
    period = check_number("schedule.period", period, 0.0, runtime.epochs, low_open=True)
    period_mult = check_number("schedule.period_mult", period_mult, 1.0)
    min_lr = _check_min_lr(min_lr, runtime.lr)
    return SGDR(*runtime, period=period, period_mult=period_mult, min_lr=min_lr)


@_builder
def cyclic(
    runtime: Runtime,
    *,
    min_lr: float | None = None,
    half_period: float = 4.0,
    mode: str = "triangular",
    min_momentum: float | None = None,
    max_momentum: float | None = None,
    gamma: float = 1.0,
) -> Schedule:
    """Cyclical learning rates (Smith 2017) between ``min_lr`` and the configured lr.

    ``min_lr: None`` means lr/4, the paper's rule of thumb (base lr 3-4x below the max).
    ``min_momentum``/``max_momentum`` cycle momentum inversely to lr (Smith 2018).
    ``gamma``: exp_range's amplitude factor per update, in (0, 1]; only that mode reads it.
    """
    min_lr = runtime.lr / 4.0 if min_lr is None else _check_min_lr(min_lr, runtime.lr)
    half_period = check_number("schedule.half_period", half_period, 0.0, low_open=True)
    if mode not in CYCLIC_MODES:
        raise ConfigError("schedule.mode", mode, f"unknown; valid: {', '.join(CYCLIC_MODES)}")
    gamma = check_number("schedule.gamma", gamma, 0.0, 1.0, low_open=True)
    if gamma != 1.0 and mode != "exp_range":
        # Silently ignored otherwise: a sweep over gamma would run one schedule many times.
        raise ConfigError("schedule.gamma", gamma, f"only mode exp_range reads it (mode: {mode})")
    if (min_momentum is None) != (max_momentum is None):
        key = "schedule.min_momentum" if min_momentum is None else "schedule.max_momentum"
        raise ConfigError(key, None, "set both min_momentum and max_momentum, or neither")
    if min_momentum is not None and max_momentum is not None:
        if runtime.momentum is None:
            raise ConfigError(
                "schedule.min_momentum", min_momentum, "the optimizer has no momentum to cycle"
            )
        min_momentum = check_number("schedule.min_momentum", min_momentum, 0.0, 1.0, high_open=True)
        max_momentum = check_number("schedule.max_momentum", max_momentum, 0.0, 1.0, high_open=True)
        if min_momentum > max_momentum:
            raise ConfigError(
                "schedule.min_momentum", min_momentum, f"must be <= max_momentum={max_momentum}"
            )
    return Cyclic(
        *runtime,
        min_lr=min_lr,
        half_period=half_period,
        mode=mode,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
        gamma=gamma,
    )


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
    return build_named(SCHEDULES, "schedule", name, **kwargs)

"""Learning-rate, batch-size and momentum schedules as pure functions of training progress.

A schedule maps (fractional epoch, update count) to a ``SchedulePoint``. It holds no state,
so resuming a run needs nothing saved. The trainer reads ``batch_size`` at the start of each
epoch and ``lr``/``momentum`` before every update, with ``epoch = e + i / steps_in_epoch``.
Each builder matches one ``conf/schedule/<name>.yaml``; runtime kwargs ``lr``, ``batch_size``,
``momentum`` and ``epochs`` come from the run, and every builder takes the same linear-warmup
keys, applied by the ``Warmup`` wrapper.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from trainrepro.config import check_kwargs
from trainrepro.errors import ConfigError
from trainrepro.optim import check_int, check_number

STEP_MODES = ("decay_lr", "increase_batch", "hybrid")
CYCLIC_MODES = ("triangular", "triangular2")


@dataclass(frozen=True)
class SchedulePoint:
    """What the trainer uses at one point of training."""

    lr: float
    batch_size: int
    momentum: float | None


class Schedule(ABC):
    """A pure function of progress: same (epoch, step) in, same point out."""

    @abstractmethod
    def __call__(self, epoch: float, step: int) -> SchedulePoint: ...


@dataclass(frozen=True)
class _Base(Schedule):
    lr: float
    batch_size: int
    momentum: float | None
    epochs: int

    def __call__(self, epoch: float, step: int) -> SchedulePoint:
        if epoch < 0 or step < 0:
            raise ValueError(f"schedule called at epoch={epoch}, step={step}; both must be >= 0")
        return self._at(epoch)

    @abstractmethod
    def _at(self, epoch: float) -> SchedulePoint: ...

    def _point(self, lr: float, batch_size: int | None = None) -> SchedulePoint:
        bs = self.batch_size if batch_size is None else batch_size
        return SchedulePoint(lr=lr, batch_size=bs, momentum=self.momentum)


@dataclass(frozen=True)
class Constant(_Base):
    def _at(self, epoch: float) -> SchedulePoint:
        return self._point(self.lr)


@dataclass(frozen=True)
class Step(_Base):
    """Piecewise-constant decay, or the equivalent batch growth (Smith et al. 2018).

    After ``n`` milestones, decay_lr uses ``lr * factor**n``; increase_batch keeps lr and uses
    ``batch_size / factor**n``, so lr/B and thus the SGD noise scale match decay_lr; hybrid
    grows the batch up to ``max_batch_size`` and moves the rest of the growth into lr.
    """

    milestones: tuple[float, ...]
    factor: float
    mode: str
    max_batch_size: int | None

    def _at(self, epoch: float) -> SchedulePoint:
        n = bisect.bisect_right(self.milestones, epoch)
        decay = self.factor**n
        if self.mode == "decay_lr":
            return self._point(self.lr * decay)
        grown = self.batch_size / decay
        cap = self.max_batch_size  # set exactly when mode == "hybrid"
        if cap is None or grown <= cap:
            return self._point(self.lr, round(grown))
        # lr / cap == lr * decay / batch_size: decay_lr's lr/B, i.e. its noise scale.
        return self._point(self.lr * decay * cap / self.batch_size, cap)


@dataclass(frozen=True)
class Exponential(_Base):
    gamma: float

    def _at(self, epoch: float) -> SchedulePoint:
        return self._point(self.lr * self.gamma**epoch)


def _cosine(high: float, low: float, fraction: float) -> float:
    return low + (high - low) * (1.0 + math.cos(math.pi * fraction)) / 2.0


@dataclass(frozen=True)
class Cosine(_Base):
    min_lr: float

    def _at(self, epoch: float) -> SchedulePoint:
        return self._point(_cosine(self.lr, self.min_lr, min(epoch / self.epochs, 1.0)))


# Fractional epochs e + i/n carry rounding error; a point this close to a restart is one.
_RESTART_TOL = 1e-9


@dataclass(frozen=True)
class SGDR(_Base):
    """Cosine annealing with warm restarts; cycle i lasts ``period * period_mult**i`` epochs."""

    period: float
    period_mult: float
    min_lr: float

    def cycle(self, epoch: float) -> tuple[float, float]:
        """(start, length) in epochs of the cycle that contains ``epoch``."""
        t, t0, mult = epoch + _RESTART_TOL * max(1.0, epoch), self.period, self.period_mult
        if mult == 1.0:
            i = math.floor(t / t0)
        else:
            i = math.floor(math.log1p(t * (mult - 1.0) / t0) / math.log(mult))

        def start(k: int) -> float:
            return t0 * k if mult == 1.0 else t0 * (mult**k - 1.0) / (mult - 1.0)

        # The closed form can be one off after rounding; settle it against the cycle starts.
        while i > 0 and start(i) > t:
            i -= 1
        while start(i + 1) <= t:
            i += 1
        return start(i), t0 * mult**i

    def _at(self, epoch: float) -> SchedulePoint:
        begin, length = self.cycle(epoch)
        fraction = min(max(epoch - begin, 0.0) / length, 1.0)
        return self._point(_cosine(self.lr, self.min_lr, fraction))


@dataclass(frozen=True)
class Cyclic(_Base):
    """Triangular cyclical lr (Smith 2017), starting at the trough; optional inverse momentum."""

    min_lr: float
    half_period: float
    mode: str
    min_momentum: float | None
    max_momentum: float | None

    def _at(self, epoch: float) -> SchedulePoint:
        cycle = math.floor(1.0 + epoch / (2.0 * self.half_period))
        x = abs(epoch / self.half_period - 2.0 * cycle + 1.0)
        height = max(0.0, 1.0 - x)
        if self.mode == "triangular2":
            height /= 2.0 ** (cycle - 1)
        lr = self.min_lr + (self.lr - self.min_lr) * height
        momentum = self.momentum
        if self.min_momentum is not None and self.max_momentum is not None:
            # Smith 2018: momentum falls while lr rises, scaled by the same amplitude.
            momentum = self.max_momentum - (self.max_momentum - self.min_momentum) * height
        return SchedulePoint(lr=lr, batch_size=self.batch_size, momentum=momentum)


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear lr warmup (Goyal et al. 2017) around any schedule, by epochs or by updates.

    Multiplies the inner schedule's lr by a factor that rises linearly from ``start_factor``
    to 1 over ``epochs`` epochs (or ``steps`` updates); batch size and momentum pass through.
    """

    inner: Schedule
    epochs: float
    steps: int
    start_factor: float

    def __post_init__(self) -> None:
        if (self.epochs > 0) == (self.steps > 0):
            raise ValueError("Warmup needs exactly one of epochs > 0 or steps > 0")

    def __call__(self, epoch: float, step: int) -> SchedulePoint:
        point = self.inner(epoch, step)
        done = epoch / self.epochs if self.epochs > 0 else step / self.steps
        if done >= 1.0:
            return point
        return replace(point, lr=point.lr * (self.start_factor + (1.0 - self.start_factor) * done))


# ---------------------------------------------------------------- validation
def _check_runtime(
    lr: float, batch_size: int, momentum: float | None, epochs: int
) -> tuple[float, int, float | None, int]:
    lr = check_number("optimizer.lr", lr, 0.0, low_open=True)
    batch_size = check_int("batch_size", batch_size, 1)
    if momentum is not None:
        momentum = check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    epochs = check_int("epochs", epochs, 1)
    return lr, batch_size, momentum, epochs


def _check_min_lr(min_lr: float, lr: float) -> float:
    min_lr = check_number("schedule.min_lr", min_lr, 0.0)
    if min_lr >= lr:
        raise ConfigError("schedule.min_lr", min_lr, f"must be < optimizer.lr={lr:g}")
    return min_lr


def _warmup(
    inner: _Base, warmup_epochs: float, warmup_steps: int, warmup_start_factor: float
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
) -> Schedule:
    """The base lr, batch size and momentum throughout."""
    inner = Constant(*_check_runtime(lr, batch_size, momentum, epochs))
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
) -> Schedule:
    """Step decay (WRN recipe, Zagoruyko & Komodakis 2016) or batch growth (Smith et al. 2018)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
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
) -> Schedule:
    """``lr * gamma**epoch``, continuous in the fractional epoch."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
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
) -> Schedule:
    """Cosine annealing to ``min_lr`` over the run (Loshchilov & Hutter 2017, no restarts)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
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
) -> Schedule:
    """SGDR: cosine annealing with warm restarts (Loshchilov & Hutter 2017)."""
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
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
) -> Schedule:
    """Cyclical learning rates (Smith 2017) between ``min_lr`` and the configured lr.

    ``min_lr: None`` means lr/4, the paper's rule of thumb (base lr 3-4x below the max).
    ``min_momentum``/``max_momentum`` cycle momentum inversely to lr (Smith 2018).
    """
    runtime = _check_runtime(lr, batch_size, momentum, epochs)
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


def noise_scale(lr: float, momentum: float | None, n_train: int, batch_size: int) -> float:
    """SGD noise scale g = lr / (1 - m) * (N / B - 1) (Smith et al. 2018)."""
    m = 0.0 if momentum is None else momentum
    m = check_number("optimizer.momentum", m, 0.0, 1.0, high_open=True)
    n_train = check_int("n_train", n_train, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > n_train:
        raise ConfigError("batch_size", batch_size, f"exceeds the {n_train} training samples")
    return lr / (1.0 - m) * (n_train / batch_size - 1.0)

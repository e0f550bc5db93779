"""The schedules themselves: frozen dataclasses, each a pure function of training progress.

``schedule(epoch, step)`` returns the ``SchedulePoint`` (lr, batch size, momentum) for that
fractional epoch and update count; nothing else is read, so a resumed run needs no saved state.
Built and validated by ``trainrepro.schedules.builders``.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

STEP_MODES = ("decay_lr", "increase_batch", "hybrid")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


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

    def cycle_ends(self, until: float) -> list[float]:
        """The epochs, up to ``until``, at which a cycle ends: the warm restarts (T_0,
        T_0 + T_0 T_mult, ...). Each end is the next cycle's start as ``cycle`` computes it."""
        ends: list[float] = []
        begin, length = self.cycle(0.0)
        while True:
            end, next_length = self.cycle(begin + length)
            if end <= begin or end > until + _RESTART_TOL * max(1.0, until):
                return ends
            ends.append(end)
            begin, length = end, next_length

    def _at(self, epoch: float) -> SchedulePoint:
        begin, length = self.cycle(epoch)
        fraction = min(max(epoch - begin, 0.0) / length, 1.0)
        return self._point(_cosine(self.lr, self.min_lr, fraction))


@dataclass(frozen=True)
class Cyclic(_Base):
    """Triangular cyclical lr (Smith 2017), starting at the trough; optional inverse momentum.

    The amplitude is constant (triangular), halves each cycle (triangular2), or is scaled by
    ``gamma**step`` (exp_range, the paper's Sec. 3.1: step = updates done, from 0).
    """

    min_lr: float
    half_period: float
    mode: str
    min_momentum: float | None
    max_momentum: float | None
    gamma: float = 1.0

    def __call__(self, epoch: float, step: int) -> SchedulePoint:
        if epoch < 0 or step < 0:
            raise ValueError(f"schedule called at epoch={epoch}, step={step}; both must be >= 0")
        return self._at(epoch, step)

    def cycle_ends(self, until: float) -> list[float]:
        """The epochs, up to ``until``, at which a cycle ends: the troughs after the first
        (``2 * half_period * k``, k >= 1), where ``_at``'s cycle number steps up."""
        period = 2.0 * self.half_period
        n = math.floor(until / period + _RESTART_TOL)
        return [period * k for k in range(1, n + 1)]

    def _at(self, epoch: float, step: int = 0) -> SchedulePoint:
        cycle = math.floor(1.0 + epoch / (2.0 * self.half_period))
        x = abs(epoch / self.half_period - 2.0 * cycle + 1.0)
        height = max(0.0, 1.0 - x)
        if self.mode == "triangular2":
            height /= 2.0 ** (cycle - 1)
        elif self.mode == "exp_range":
            # By updates, not epochs, as the paper's gamma^iteration: a pure function of step.
            height *= self.gamma**step
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
    By updates, the k-th update (k = 1..steps) gets ``start + (1 - start) * k / steps``, as in
    Liu et al.'s (2020) warmup code: the first update never runs at lr 0 even with start 0,
    and update ``steps`` is at the full rate. By epochs the factor is continuous in the epoch.
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
        done = epoch / self.epochs if self.epochs > 0 else (step + 1) / self.steps
        if done >= 1.0:
            return point
        return replace(point, lr=point.lr * (self.start_factor + (1.0 - self.start_factor) * done))

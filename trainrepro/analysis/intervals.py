"""Deciding a claim on numbers over seeds: a 95% interval for the mean of the declared effect,
and the status it gives against the declared threshold.

- ``>`` / ``<``: **pass** when the whole interval lies beyond the threshold on the claimed side,
  **fail** when it lies wholly on the other side, **inconclusive** when it straddles it.
- ``within`` (a "no difference" claim, an equivalence test): **pass** only when the whole
  interval lies inside (-margin, +margin); **fail** when it lies wholly outside; a difference
  that merely went undetected is **inconclusive**, never a pass.

The interval is Student's t over the per-seed values (paired differences when the claim pairs
seeds): mean +- t(0.975, n-1) * sd / sqrt(n). One value has no spread, so its interval is
unbounded: a comparison of single runs is at best inconclusive. For an inconclusive result,
:func:`seeds_needed` says how many seeds would settle it if the mean and spread stayed as seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
DIRECTIONS = (">", "<", "within")
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
MAX_SEEDS = 1000  # seeds_needed gives up beyond this (an effect at the threshold itself)

# Two-sided 95% critical values of Student's t by degrees of freedom (standard tables; the
# normal quantile 1.960 beyond 120), so the package needs no scipy.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip


def t_critical(df: int) -> float:
    """t(0.975, df); between tabled values the next smaller df's (slightly wider: safe)."""
    if df < 1:
        return math.inf
    if df in _T975:
        return _T975[df]
    if df > 120:
        return 1.960
    return _T975[max(k for k in _T975 if k < df)]


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its 95% t interval (unbounded for n = 1)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float  # sample standard deviation (NaN for n = 1)

    def show(self, digits: int = 2, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        if self.n < 2:
            return f"{self.mean:+.{digits}f}{u} (one run: no interval)"
        return (
            f"{self.mean:+.{digits}f}{u}, 95% interval [{self.low:+.{digits}f}, "
            f"{self.high:+.{digits}f}] over {self.n} seeds"
        )


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t interval of ``values`` (finite numbers; at least one)."""
    xs = [float(v) for v in values]
    if not xs or not all(math.isfinite(v) for v in xs):
        raise ValueError(f"t_interval needs finite values, got {xs}")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    half = t_critical(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def status(interval: Interval, direction: str, threshold: float) -> str:
    """pass, fail or inconclusive for a claim that the effect is ``direction`` ``threshold``
    (for ``within``, ``threshold`` is the margin: |effect| < margin)."""
    lo, hi = interval.low, interval.high
    if direction == ">":
        return PASS if lo > threshold else FAIL if hi <= threshold else INCONCLUSIVE
    if direction == "<":
        return PASS if hi < threshold else FAIL if lo >= threshold else INCONCLUSIVE
    if direction == "within":
        margin = abs(threshold)
        if -margin < lo and hi < margin:
            return PASS
        return FAIL if lo >= margin or hi <= -margin else INCONCLUSIVE
    raise ValueError(f"direction {direction!r}: must be one of {DIRECTIONS}")


def seeds_needed(interval: Interval, direction: str, threshold: float) -> int | None:
    """The fewest seeds whose interval, at the observed mean and spread, would lie wholly on
    one side of the threshold (inside or outside the margin for ``within``); None when one run
    gives no spread, or the mean sits on the threshold."""
    if interval.n < 2 or not math.isfinite(interval.sd):
        return None
    if direction == "within":
        margin = abs(threshold)
        # inside: |mean| + half < margin; outside: |mean| - half >= margin
        distance = abs(margin - abs(interval.mean))
    else:
        distance = abs(interval.mean - threshold)
    if distance == 0:
        return None
    if interval.sd == 0:
        return interval.n
    for n in range(max(interval.n, 2), MAX_SEEDS + 1):
        if t_critical(n - 1) * interval.sd / math.sqrt(n) < distance:
            return n
    return None


def describe(direction: str, threshold: float, unit: str = "") -> str:
    """The acceptance rule in words: 'the 95% interval lies wholly above +0.50 points'."""
    u = f" {unit}" if unit else ""
    if direction == ">":
        return f"the 95% interval over seeds lies wholly above {threshold:+g}{u}"
    if direction == "<":
        return f"the 95% interval over seeds lies wholly below {threshold:+g}{u}"
    return f"the 95% interval over seeds lies wholly inside ±{abs(threshold):g}{u}"

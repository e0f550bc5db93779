"""The one exception type that the command line turns into a one-line message, and the value
checks every builder uses to raise it."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value or missing input, named by its config key.

    The command line prints ``error: <key>=<value>: <reason>`` and exits with status 2,
    without a traceback; nothing is written to the run directory.
    """

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}={_show(value)}: {reason}")


def _show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def check_number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within the given bounds, else ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            reason = f"must be {'>' if low_open else '>='} {low:g}"
        elif low is None:
            reason = f"must be {'<' if high_open else '<='} {high:g}"
        else:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            reason = f"must be in {left}{low:g}, {high:g}{right}"
        raise ConfigError(key, value, reason)
    return float(value)


def check_int(key: str, value: Any, low: int | None = None) -> int:
    """``value`` as an int >= ``low``, else ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, "must be an integer")
    if low is not None and value < low:
        raise ConfigError(key, value, f"must be >= {low}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "must be true or false")
    return value

"""The one exception type that the command line turns into a one-line message."""

from __future__ import annotations


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

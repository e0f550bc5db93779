"""A test-only callback that signals its own process at a chosen update, as a scheduler would.

Used through the command line with ``PYTHONPATH=tests`` and
``+callbacks.kill._target_=signal_callback.signal_at +callbacks.kill.update=N``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from trainrepro.engine.run import Callback


class SignalAt(Callback):
    def __init__(self, update: int, signal_name: str, times: int) -> None:
        self.update = update
        self.signum = signal.Signals[signal_name]
        self.times = times

    def after_backward(self, run: Any, update: int) -> None:
        if update == self.update:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


def signal_at(
    model: Any, update: int = 1, signal_name: str = "SIGTERM", times: int = 1
) -> SignalAt:
    return SignalAt(update, signal_name, times)

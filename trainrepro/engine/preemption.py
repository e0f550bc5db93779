"""Stop a run cleanly on SIGTERM or SIGINT, so a scheduler's preemption or Ctrl-C costs nothing.

The first signal only raises a flag: the trainer finishes the update it is in, writes a
checkpoint that records its position inside the epoch, writes ``summary.json`` with status
``interrupted`` and the command line exits 128 + the signal number (143 for SIGTERM, 130 for
SIGINT), as a shell reports a process killed by that signal. A second signal means "now": it
raises :class:`Preempted` wherever the program is. Every file of a run directory is written to a
temporary name and renamed (``trainrepro.engine.records``), and that write removes its
temporary file on any exception, so the last complete checkpoint survives.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """A second signal while stopping; a BaseException, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received twice: stopped at once")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Set by the first signal (or by a test through :meth:`request`); read between updates."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + self.signum

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal.Signals(self.signum).name


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Route SIGTERM and SIGINT to ``flag`` while the block runs, then restore the old handlers.

    Signal handlers can only be installed from the main thread; elsewhere (a test runner's
    worker thread, say) the block runs with the process's handlers unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag:
            raise Preempted(signum)
        flag.request(signum)
        print(
            f"\n{signal.Signals(signum).name}: finishing this update, then checkpointing "
            "(send it again to stop at once)",
            flush=True,
        )

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

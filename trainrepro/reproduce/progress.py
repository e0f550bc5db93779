"""The progress line of a running ``trainrepro reproduce``: runs done, running and left (failed,
interrupted and diverged when any) and an ETA from the epochs finished so far (status.py).

On a terminal it is a bar kept below the per-run lines and redrawn every few seconds; anywhere
else (a log file, a pipe) it is a plain ``progress: ...`` line after each run's start and end,
so a log holds no carriage returns. The runner's per-run lines are unchanged.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainrepro.engine.runner import RunSpec, say, show_footer
from trainrepro.reproduce.status import (
    DONE_STATES,
    FAILED,
    INTERRUPTED,
    NOT_STARTED,
    RUNNING,
    RunView,
    read_views,
    totals_line,
)

PREFIX = "progress: "
REFRESH_S = 2.0  # a terminal bar's redraw interval: a read of each run's metrics.csv
# The runner's events, and the state each one sets; "finished" and "kept" take the disk's
# (completed or diverged).
_EVENT_STATE = {"started": RUNNING, "failed": FAILED, "interrupted": INTERRUPTED}


class Progress:
    """Watches a runner (``run_all(..., watch=progress)``) over ``specs`` on ``jobs`` slots.
    Use as a context manager around the runner: it says the first line and, on a terminal,
    keeps the bar drawn until the runner returns. ``epochs``: each run's total, for runs whose
    config.yaml is not written yet."""

    def __init__(
        self,
        specs: Sequence[RunSpec],
        jobs: int,
        epochs: Mapping[Path, int] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.specs, self.jobs, self.epochs = list(specs), jobs, dict(epochs or {})
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.events: dict[Path, str] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def views(self, now: float | None = None) -> list[RunView]:
        """The runs as this runner sees them: a run it has not started yet is left, whatever
        an earlier invocation left in its folder (the runner resumes or restarts it)."""
        views = read_views(self.specs, now, self.epochs)
        with self.lock:
            events = dict(self.events)
        for view in views:
            event = events.get(view.run_dir)
            if event in _EVENT_STATE:
                view.state = _EVENT_STATE[event]
            elif event is None and view.state not in DONE_STATES:
                view.state = NOT_STARTED
            elif view.state not in DONE_STATES:  # finished, yet no final summary.json
                view.state = FAILED
        return views

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return PREFIX + totals_line(self.views(now), self.jobs, now)

    def bar(self, width: int | None = None) -> str:
        """The line behind a bar of the epochs done, cut to the terminal's width (a line that
        wraps could not be redrawn in place)."""
        now = time.time()
        views = self.views(now)
        total = sum(v.epochs or 0 for v in views)
        done = sum(min(v.epochs_done, v.epochs or 0) for v in views)
        filled = round(20 * done / total) if total else 0
        text = f"[{'#' * filled}{'.' * (20 - filled)}] {totals_line(views, self.jobs, now)}"
        width = width or shutil.get_terminal_size().columns
        return text[: max(width - 1, 10)]

    def __call__(self, run_dir: Path, event: str) -> None:
        with self.lock:
            self.events[run_dir] = event
        if self.tty:
            show_footer(self.bar())
        elif event != "kept":  # a kept run changes nothing: the first line counted it
            say(self.line())

    def _redraw(self) -> None:
        while not self._stop.wait(REFRESH_S):
            show_footer(self.bar())

    def __enter__(self) -> Progress:
        if self.tty:
            show_footer(self.bar())
            self._thread = threading.Thread(target=self._redraw, daemon=True)
            self._thread.start()
        else:
            say(self.line())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            show_footer("")
            say(self.line())  # the last state, as a line that stays

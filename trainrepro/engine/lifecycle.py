"""A run's life around the training loop (trainrepro.engine.train): before it starts, a completed
run is left as it is on ``resume=true`` and the temporary files of a killed write are removed;
after its first updates, one estimate of its length when that is long; at its end, the summary
(with every command line that ran it) and, when interrupted, the command that continues it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainrepro.engine.checkpoint import (
    CHECKPOINT_NAME,
    Progress,
    check_same_config,
    load_checkpoint,
)
from trainrepro.engine.records import (
    determinism,
    device_description,
    git_revision,
    is_temporary,
    versions,
)
from trainrepro.engine.run import Run
from trainrepro.errors import ConfigError

SUMMARY_NAME = "summary.json"
# A run whose remaining training is estimated longer than this says so once (seconds); the
# environment variable TRAINREPRO_ESTIMATE_OVER_S overrides it (0: always, for tests).
ESTIMATE_OVER_S = 3600.0
ESTIMATE_ENV = "TRAINREPRO_ESTIMATE_OVER_S"
# Updates timed for the estimate, after the first (warm-up: allocation, cudnn autotuning).
MEASURED_UPDATES = 5


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json, or {} when there is none (yet) or it cannot be read."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def completed_run(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the completed run in ``run_dir`` that ``resume=true`` leaves untouched, or
    None when the run is not complete. Another config is refused, as for any resume."""
    summary = read_summary(run_dir)
    if summary.get("status") != "completed":
        return None
    check_same_config(load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)["config"], config)
    return summary


def remove_stale_temporaries(run_dir: Path, say: Callable[[str], None]) -> None:
    """Delete the temporary files that a write killed mid-way (kill -9, a crash of the machine)
    left in ``run_dir``. Only files of our own atomic writes' pattern (records.is_temporary:
    ``.<name>.<8 random>.tmp``) are removed; anything else in the folder is the user's."""
    stale = [p for p in Path(run_dir).iterdir() if p.is_file() and is_temporary(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        names = ", ".join(sorted(p.name for p in stale))
        say(f"removed {len(stale)} temporary file(s) of an interrupted write: {names}")


def commands_so_far(previous: dict[str, Any], command: list[str] | None) -> list[list[str]]:
    """Every command line (as its overrides) that ran this run, the first first: those the
    ``previous`` summary.json recorded, then ``command`` (None: called from Python, not added).
    A summary written before ``commands`` existed holds the last one only, as ``command``."""
    commands = previous.get("commands")
    if not isinstance(commands, list):
        commands = [previous["command"]] if previous.get("command") else []
    return [*commands, *([list(command)] if command is not None else [])]


def summary(
    *,
    status: str,
    diverged_at: int | None,
    progress: Progress,
    signal: str | None,
    run: Run,
    ranks: int,
    commands: list[list[str]],
    started: str,
) -> dict[str, Any]:
    """What summary.json holds (README, What a run directory holds)."""
    rows = progress.rows
    return {
        "status": status,
        "diverged": status == "diverged",
        "diverged_at_update": diverged_at,
        "epochs_completed": progress.epoch,
        "position": {"epoch": progress.epoch, "batch": progress.batch, "updates": progress.updates},
        "signal": signal,
        "final": rows[-1] if rows else {},
        "best_test_acc": max(
            (r["test_acc"] for r in rows if r["test_acc"] is not None), default=None
        ),
        "num_params": sum(p.numel() for p in run.model.parameters()),
        "notes": run.data.notes,
        "device": device_description(run.device),
        "determinism": determinism(),  # the switches of config.yaml's deterministic, as run
        "ranks": ranks,
        "versions": versions(),
        "git": git_revision(),
        # The overrides that started the run, and every invocation (resumes) after it.
        "command": commands[0] if commands else None,
        "commands": commands,
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def resume_command(run_dir: Path, command: list[str]) -> str:
    """The command line that continues the run in ``run_dir``: its overrides (any ``resume=``
    dropped), ``resume=true`` and the run's own folder, which the default ``hydra.run.dir`` (a
    new timestamped folder) would not be."""
    kept = [o for o in command if o.lstrip("+~").split("=", 1)[0] != "resume"]
    return shlex.join([*_program(), *kept, "resume=true", f"hydra.run.dir={run_dir}"])


def _program() -> list[str]:
    """``python -m trainrepro`` when ``python`` on the PATH is this interpreter (an active
    virtual environment), else this interpreter's path, so the command works as printed."""
    python = shutil.which("python")
    if python and os.path.abspath(python) == os.path.abspath(sys.executable):
        return ["python", "-m", "trainrepro"]
    return [sys.executable, "-m", "trainrepro"]


def interrupted_message(
    signal: str, progress: Progress, run_dir: Path, command: list[str] | None
) -> str:
    """Where an interrupted run stopped, and how to continue it."""
    where = f"interrupted ({signal}) at epoch {progress.epoch + 1}, batch {progress.batch}"
    if command is None:  # called from Python: the caller knows its config
        return f"{where}; continue with resume=true in {run_dir}"
    return f"{where}; continue with:\n  {resume_command(run_dir, command)}"


def estimate_threshold() -> float:
    """Seconds of training over which a run says how long it will take: ESTIMATE_OVER_S, or
    $TRAINREPRO_ESTIMATE_OVER_S when set."""
    raw = os.environ.get(ESTIMATE_ENV)
    try:
        return ESTIMATE_OVER_S if raw is None else float(raw)
    except ValueError:
        raise ConfigError(ESTIMATE_ENV, raw, "must be a number of seconds") from None


class Estimate:
    """Says once, after the first updates, how long the run's training will take, when that is
    over ``over_s`` (estimate_threshold()).

    :meth:`tick` is called only where the loop already brings the loss to the host (every
    update on CPU, every few on CUDA), so the clock times finished work and adds no sync. Its
    first call starts the clock (the updates before it are the warm-up); the estimate is made
    once MEASURED_UPDATES more are done.
    """

    def __init__(
        self,
        over_s: float,
        total_updates: int,
        command: list[str] | None,
        say: Callable[[str], None],
    ) -> None:
        self.over_s = over_s
        self.total = total_updates
        self.command = command
        self.say = say
        self.start: tuple[float, int] | None = None
        self.done = False

    def tick(self, updates: int) -> None:
        if self.done:
            return
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, updates)
            return
        t0, u0 = self.start
        if updates - u0 < MEASURED_UPDATES:
            return
        self.done = True
        rate = (updates - u0) / max(now - t0, 1e-9)
        left_s = (self.total - updates) / rate
        if left_s > self.over_s:
            self.say(self.message(rate, left_s))

    def message(self, rate: float, left_s: float) -> str:
        plan = "trainrepro plan <overrides>"
        if self.command is not None:
            plan = shlex.join(["trainrepro", "plan", *self.command])
        return (
            f"estimate: {rate:.3g} updates/s, {self.total:,} updates in the run: about "
            f"{self.total / rate / 3600:.1f} h of training ({left_s / 3600:.1f} h left; "
            "evaluations not counted)\n"
            f"  preview it with `{plan}`; for a run of minutes lower "
            "epochs= or dataset.train_size=, or try a quick profile "
            "(`trainrepro reproduce <paper> --profile quick`, conf/profile/)"
        )

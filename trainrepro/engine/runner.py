"""Run a list of trainrepro runs, a few at a time, restartably: the engine of `trainrepro
reproduce` (and of `scripts/run_experiments.py`, its line-based command line).

A run is a run directory and its overrides, one per line on the command line's input:

    runs/radam-quick/adam/lr0.1/seed0  +experiment=radam/adam optimizer.lr=0.1 seed=0

A run whose ``summary.json`` says completed or diverged is kept; one with a checkpoint is
resumed (``resume=true``); any other is started afresh. A SIGTERM or SIGINT to the runner
stops the runs in flight at a checkpoint (they resume on the next call) and starts no more.
Each run's output goes to ``<run dir>.log``, between a line at each start (``== <time> code
<stamp> <command>``) and one at each end (``== <time> exit <code> after <s> s``). Runs start
in the order given (put the longest first) on ``--jobs`` workers; ``--threads`` sets each
run's torch/OpenMP threads (at most cores / jobs), so ``--jobs 2 --threads 1`` fills two
cores with no oversubscription; ``--gpus 0,1 --jobs-per-gpu 4`` runs four on each GPU
(trainrepro/engine/placement.py).
Exits 1 if any run failed, after the others have finished.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from trainrepro.engine import placement as placing
from trainrepro.engine.checkpoint import FINISHED, run_state
from trainrepro.engine.placement import GpuSlots, Placement
from trainrepro.engine.records import code_stamp
from trainrepro.errors import ConfigError

DONE = FINISHED
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
INTERRUPTED_CODES = (128 + signal.SIGTERM, 128 + signal.SIGINT)
RunSpec = tuple[Path, list[str]]  # (run dir, overrides)
# Told what happened to a run: "kept", "started", then "finished", "failed" or "interrupted".
Watch = Callable[[Path, str], None]
NO_GPU = GpuSlots(Placement())


class _Footer:
    """A line kept below the per-run lines of a terminal (``trainrepro reproduce``'s progress
    bar): each line said clears it and draws it again under itself."""

    lock = threading.RLock()  # re-entrant: a signal handler may say while this thread writes
    text = ""


def say(message: str) -> None:
    """One line in one write, so the lines of runs finishing together never interleave."""
    with _Footer.lock:
        line = message + "\n"
        if _Footer.text:  # clear the bar, say the line, draw the bar again below it
            line = f"\r\x1b[K{line}{_Footer.text}"
        sys.stdout.write(line)
        sys.stdout.flush()


def show_footer(text: str) -> None:
    """Draw ``text`` as the terminal's last line, in place of the one before ("": none)."""
    with _Footer.lock:
        if text or _Footer.text:
            sys.stdout.write("\r\x1b[K" + text)
            sys.stdout.flush()
        _Footer.text = text


def parse_runs(lines: list[str]) -> list[RunSpec]:
    """``(run dir, overrides)`` per non-empty, non-comment line; duplicate dirs are an error."""
    runs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words:
            runs.append((Path(words[0]), words[1:]))
    check_unique(runs)
    return runs


def check_unique(runs: Sequence[RunSpec]) -> None:
    """Two runs in one directory would resume each other: refuse the list."""
    seen: set[Path] = set()
    for run_dir, _ in runs:
        if run_dir in seen:
            raise SystemExit(f"error: run directory {run_dir} is listed twice")
        seen.add(run_dir)


def status_of(run_dir: Path) -> str:
    """``done``, ``resume`` or ``fresh``: what the runner will do with this directory (the
    rule Hydra sweeps follow too, trainrepro.engine.checkpoint.run_state)."""
    return run_state(run_dir)


def dry_run_lines(runs: Sequence[RunSpec]) -> list[str]:
    """What each run would do, one line each: ``<status> <run dir>  <overrides>``."""
    return [f"{status_of(d):6} {d}  {shlex.join(o)}" for d, o in runs]


class _Children:
    """The runs in flight. A SIGTERM or SIGINT to the runner is passed to each of them once
    (they checkpoint and exit 143 / 130) and no further run starts; each child has its own
    session, so a Ctrl-C in the terminal reaches it only through here, never twice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.signum: int | None = None

    def forward(self, signum: int, frame: object) -> None:
        with self.lock:
            first = self.signum is None
            self.signum = signum
            procs = list(self.procs)
        if first:
            say(f"{signal.Signals(signum).name}: stopping {len(procs)} run(s) at a checkpoint")
        for proc in procs:
            proc.send_signal(signum)


_children = _Children()


def code_of(log: Path) -> str | None:
    """The code stamp of the last start of a run, from its log's header lines (None for a log
    written before stamps were recorded, or none)."""
    if not log.is_file():
        return None
    stamps = [line.split()[3] for line in log.read_text(errors="replace").splitlines()
              if line.startswith("== ") and len(line.split()) > 3 and line.split()[2] == "code"]
    return stamps[-1] if stamps else None  # fmt: skip


def run_one(
    run_dir: Path,
    overrides: list[str],
    threads: int | None,
    allow_other_code: bool = False,
    code: str | None = None,
    gpus: GpuSlots | None = None,
    watch: Watch | None = None,
) -> bool:
    state = status_of(run_dir)
    if state == "done":
        say(f"{run_dir}: done, kept")
        if watch:
            watch(run_dir, "kept")
        return True
    if _children.signum is not None:
        say(f"{run_dir}: not started (stopping)")
        return False
    log = run_dir.with_name(run_dir.name + ".log")
    code = code or code_stamp()
    started_with = code_of(log) if state == "resume" else None
    if started_with is not None and started_with != code and not allow_other_code:
        # Half a run under one version of the code and half under another is neither.
        say(f"{run_dir}: NOT resumed: its checkpoint comes from code {started_with}, this is "
            f"{code}; pass --allow-other-code to resume it anyway, or delete it to start over")
        if watch:
            watch(run_dir, "failed")  # counted with the failures, as run_all counts it
        return False  # fmt: skip
    if state == "fresh":
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    resume = state == "resume"
    with (gpus or NO_GPU).lend() as gpu:  # waits for a free GPU, if any
        env = placing.child_env(os.environ, threads, gpu)
        return _start(run_dir, overrides, resume, log, code, env, gpu, watch or _unwatched)


def _unwatched(run_dir: Path, event: str) -> None:
    pass


def _start(
    run_dir: Path, overrides: list[str], resume: bool, log: Path, code: str,
    env: dict[str, str], gpu: str | None, watch: Watch,
) -> bool:  # fmt: skip
    """Run one trainrepro process to its end; True when it finished."""
    device = ["device=cuda"] if gpu is not None else []  # never a silent fall back to the CPU
    cmd = [sys.executable, "-m", "trainrepro", *overrides, *device]
    cmd += [f"resume={str(resume).lower()}", "progress=false", f"hydra.run.dir={run_dir}"]
    on_gpu = f" on GPU {gpu}" if gpu is not None else ""
    say(f"{run_dir}: started (resume={str(resume).lower()}){on_gpu}")
    watch(run_dir, "started")
    start = time.monotonic()
    with log.open("a") as out:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out.write(f"== {stamp} code {code} {shlex.join(cmd)}\n")
        out.flush()
        with _children.lock:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            _children.procs.add(proc)
        exit_code = proc.wait()
        with _children.lock:
            _children.procs.discard(proc)
        elapsed = time.monotonic() - start
        # How the process ended, for `trainrepro reproduce --status` (a failed run writes no
        # summary.json); code_of reads only the "code" lines.
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out.write(f"== {stamp} exit {exit_code} after {elapsed:.0f} s\n")
    if exit_code in INTERRUPTED_CODES:
        say(f"{run_dir}: interrupted after {elapsed:.0f} s; the same command resumes it")
        watch(run_dir, "interrupted")
        return False
    if exit_code != 0:
        say(f"{run_dir}: FAILED (exit {exit_code}) after {elapsed:.0f} s, see {log}")
        watch(run_dir, "failed")
        return False
    say(f"{run_dir}: finished in {elapsed:.0f} s")
    watch(run_dir, "finished")
    return True


def run_all(
    runs: Sequence[RunSpec],
    where: Placement | None = None,
    allow_other_code: bool = False,
    watch: Watch | None = None,
) -> int:
    """Every run on ``where.jobs`` workers (each run on a GPU of ``where.gpus`` when given),
    in order; returns how many failed or were interrupted. ``watch`` is told, after each
    run's line, what happened to it (from the workers' threads).
    An interrupted run is resumed only under the code that started it (its log's stamp: the
    commit and the digest of uncommitted changes), unless ``allow_other_code``.

    Called from the main thread, a SIGTERM or SIGINT stops the runs in flight at a checkpoint
    and raises SystemExit(128 + signal) once they have.
    """
    check_unique(runs)
    where = where or Placement()
    start = time.monotonic()
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _children.forward) for s in STOP_SIGNALS} if in_main else {}
    try:
        with ThreadPoolExecutor(max_workers=where.jobs) as pool:
            code, slots = code_stamp(), GpuSlots(where)
            ok = list(pool.map(lambda r: run_one(r[0], r[1], where.threads, allow_other_code,
                                                 code, slots, watch), runs))  # fmt: skip
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = ok.count(False)
    say(f"{len(runs)} runs ({failed} failed or interrupted) in {time.monotonic() - start:.0f} s")
    if _children.signum is not None:
        raise SystemExit(128 + _children.signum)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, help="file with one run per line (default: stdin)")
    placing.add_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would happen")
    parser.add_argument("--allow-other-code", action="store_true",
                        help="resume runs started under another commit or other local changes")
    args = parser.parse_args(argv)
    try:
        where = placing.plan(args.jobs, args.threads, args.gpus, args.jobs_per_gpu)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    lines = (args.runs.read_text() if args.runs else sys.stdin.read()).splitlines()
    runs = parse_runs(lines)
    if args.dry_run:
        print("\n".join(dry_run_lines(runs)))
        return 0
    print(f"{len(runs)} runs, {where.describe()}" + (f"; {where.note}" if where.note else ""))
    return 1 if run_all(runs, where, args.allow_other_code) else 0

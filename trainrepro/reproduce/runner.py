"""Run a list of trainrepro runs, a few at a time, restartably: the engine of `trainrepro
reproduce` (and of `scripts/run_experiments.py`, its line-based command line).

A run is a run directory and its overrides, one per line on the command line's input:

    runs/radam-quick/adam/lr0.1/seed0  +experiment=radam/adam optimizer.lr=0.1 seed=0

A run whose ``summary.json`` says completed or diverged is kept; one with a checkpoint is
resumed (``resume=true``); any other is started afresh. Each run's output goes to
``<run dir>.log``. Runs start in the order given (put the longest first) on ``--jobs`` workers;
``--threads`` sets each run's torch/OpenMP threads, so ``--jobs 2 --threads 1`` fills two
cores with no oversubscription. Exits 1 if any run failed, after the others have finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

DONE = ("completed", "diverged")
RunSpec = tuple[Path, list[str]]  # (run dir, overrides)


def say(message: str) -> None:
    """One line in one write, so the lines of runs finishing together never interleave."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


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
    """``done``, ``resume`` or ``fresh``: what the runner will do with this directory."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("status") in DONE:
                return "done"
        except json.JSONDecodeError:
            pass
    return "resume" if (run_dir / "checkpoint.pt").is_file() else "fresh"


def dry_run_lines(runs: Sequence[RunSpec]) -> list[str]:
    """What each run would do, one line each: ``<status> <run dir>  <overrides>``."""
    return [f"{status_of(d):6} {d}  {shlex.join(o)}" for d, o in runs]


def run_one(run_dir: Path, overrides: list[str], threads: int | None) -> bool:
    state = status_of(run_dir)
    if state == "done":
        say(f"{run_dir}: done, kept")
        return True
    if state == "fresh":
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    resume = state == "resume"
    cmd = [sys.executable, "-m", "trainrepro", *overrides, f"resume={str(resume).lower()}"]
    cmd += ["progress=false", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    say(f"{run_dir}: started (resume={str(resume).lower()})")
    start = time.monotonic()
    log = run_dir.with_name(run_dir.name + ".log")
    with log.open("a") as out:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out.write(f"== {stamp} {shlex.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    elapsed = time.monotonic() - start
    if code != 0:
        say(f"{run_dir}: FAILED (exit {code}) after {elapsed:.0f} s, see {log}")
        return False
    say(f"{run_dir}: finished in {elapsed:.0f} s")
    return True


def run_all(runs: Sequence[RunSpec], jobs: int = 1, threads: int | None = None) -> int:
    """Every run on ``jobs`` workers, in order; returns how many failed."""
    check_unique(runs)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ok = list(pool.map(lambda r: run_one(r[0], r[1], threads), runs))
    failed = ok.count(False)
    say(f"{len(runs)} runs ({failed} failed) in {time.monotonic() - start:.0f} s")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, help="file with one run per line (default: stdin)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--dry-run", action="store_true", help="list what would happen")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: must be >= 1")
    lines = (args.runs.read_text() if args.runs else sys.stdin.read()).splitlines()
    runs = parse_runs(lines)
    if args.dry_run:
        print("\n".join(dry_run_lines(runs)))
        return 0
    return 1 if run_all(runs, args.jobs, args.threads) else 0

"""How long a paper's runs will take, said before they start: each run's wall time as measured
by the profile's committed results (``results/<paper>[-<profile>]/runs.csv``), the runs left
laid out on the workers in the runner's order. A profile never run has no measurement, and the
estimate says so instead of guessing.

The times were measured at the profile's runs-at-a-time on the hardware the CSV names: another
machine, or another ``--jobs``, changes them; the line says what it rests on.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from trainrepro.engine.runner import RunSpec, status_of


def measured_seconds(csv: Path) -> tuple[dict[tuple[str, ...], float], str]:
    """Wall seconds per run, keyed by the run's path below its root (the parts after
    ``runs/<result name>/``), and the device(s) they ran on; empty when there is no CSV."""
    if not csv.is_file():
        return {}, ""
    table = pd.read_csv(csv, low_memory=False)
    if not {"run_dir", "wall_seconds"} <= set(table.columns):
        return {}, ""
    last = table.groupby("run_dir", sort=False).tail(1)
    seconds = {
        tuple(Path(str(d)).parts[2:]): float(s)
        for d, s in zip(last["run_dir"], last["wall_seconds"], strict=True)
        if pd.notna(s)
    }
    devices = sorted(set(last["device"].dropna().astype(str))) if "device" in last else []
    return seconds, ",".join(devices)


def makespan(durations: Sequence[float], jobs: int) -> float:
    """Wall time of ``durations`` started in order on ``jobs`` workers, each run starting
    when a worker frees up (the runner's thread pool)."""
    workers = [0.0] * max(1, min(jobs, len(durations)))
    for seconds in durations:
        start = heapq.heappop(workers)
        heapq.heappush(workers, start + seconds)
    return max(workers, default=0.0)


def estimate_line(specs: Sequence[RunSpec], run_root: Path, csv: Path, jobs: int) -> str:
    """One line: the runs left and about how long they take, or why there is no estimate."""
    left = [d for d, _ in specs if status_of(d) != "done"]
    if not left:
        return f"estimate: nothing to run ({len(specs)} runs done)"
    seconds, devices = measured_seconds(csv)
    if not seconds:
        return (
            f"estimate: none for {len(left)} runs: {csv} holds no measured run times (this "
            "profile has not been run and committed yet)"
        )
    durations, unmeasured = [], 0
    typical = statistics.median(seconds.values())
    for run_dir in left:
        key = tuple(run_dir.relative_to(run_root).parts) if run_dir.is_relative_to(run_root) else ()
        if key in seconds:
            durations.append(seconds[key])
        else:
            durations.append(typical)
            unmeasured += 1
    minutes = makespan(durations, jobs) / 60
    guess = f"; {unmeasured} without a measurement counted at the median" if unmeasured else ""
    return (
        f"estimate: about {minutes:.0f} min for {len(left)} of {len(specs)} runs, {jobs} at a "
        f"time (each run's wall time in {csv}, measured on {devices or 'unknown hardware'}"
        f"{guess})"
    )

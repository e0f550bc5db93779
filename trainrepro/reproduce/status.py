"""A paper's runs at a glance, read only from their run directories: each declared run's state,
epochs done of its total, and one totals line with an ETA from the epochs finished so far.

``trainrepro reproduce <paper> --profile P --status`` prints the table for a paper running
elsewhere (another terminal, another machine on the same disk); the progress line of a running
``trainrepro reproduce`` (progress.py) is the same totals line. What each state rests on:

- completed / diverged: summary.json says so (the runner keeps the run);
- interrupted: summary.json says interrupted (a signal stopped it at a checkpoint), or the
  run's log ends with the runner's ``exit 130|143`` line; failed: the log ends with another
  exit code (a crash writes no summary);
- running: the log's last line is a start, or a file was written after the summary; it is
  ``stale`` instead when none of its files (metrics.csv, checkpoint.pt, config.yaml, its log)
  was written for STALE_AFTER_S seconds and STALE_EPOCHS of its epochs: a process killed
  without a word (kill -9, out of memory, a machine that stopped) or hung;
- not started: no run directory and no log.
"""

from __future__ import annotations

import csv
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from trainrepro.engine.checkpoint import CHECKPOINT_NAME
from trainrepro.engine.lifecycle import SUMMARY_NAME, read_summary
from trainrepro.engine.runner import INTERRUPTED_CODES, RunSpec
from trainrepro.reproduce.estimate import makespan

NOT_STARTED, RUNNING, STALE = "not started", "running", "stale"
INTERRUPTED, FAILED, COMPLETED, DIVERGED = "interrupted", "failed", "completed", "diverged"
DONE_STATES = (COMPLETED, DIVERGED)
# A run in flight writes metrics.csv and its checkpoint at every epoch end (its log gets a line
# too), so no write for several epochs, and for minutes, means no process is behind it.
STALE_AFTER_S = 300.0
STALE_EPOCHS = 3.0
_EPOCHS_LINE = re.compile(r"^epochs: (\d+)$", re.MULTILINE)  # config.yaml's top-level key


@dataclass
class RunView:
    """One declared run as its directory shows it; ``state`` is set by :func:`read_views`."""

    run_dir: Path
    key: tuple[str, ...]  # its overrides but the seed: runs with one key train alike
    state: str = NOT_STARTED
    epochs_done: int = 0
    epochs: int | None = None  # the run's total, from config.yaml (or the composed config)
    seconds_per_epoch: float | None = None  # its own, over its finished epochs
    last_write: float | None = None  # newest write to any of its files (time.time())
    epoch_end: float | None = None  # when its last epoch ended (or it started)
    detail: str = ""


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _seconds_per_epoch(rows: list[dict[str, str]]) -> float | None:
    """Mean wall seconds per finished epoch (training and evaluation)."""
    seconds = []
    for row in rows:
        try:
            seconds.append(float(row.get("epoch_seconds") or "nan"))
        except ValueError:
            continue
    seconds = [s for s in seconds if s == s and s > 0]
    return sum(seconds) / len(seconds) if seconds else None


def config_epochs(run_dir: Path) -> int | None:
    try:
        found = _EPOCHS_LINE.search((run_dir / "config.yaml").read_text())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def log_events(log: Path) -> tuple[float | None, int | None]:
    """The time of the last start in a run's log and, when the process has ended since, its
    exit code (None: in flight, or a log written before the runner recorded exits)."""
    try:
        lines = [line.split() for line in log.read_text(errors="replace").splitlines()
                 if line.startswith("== ")]  # fmt: skip
    except OSError:
        return None, None
    start, code = None, None
    for words in lines:
        if len(words) > 3 and words[2] == "exit" and words[3].lstrip("-").isdigit():
            code = int(words[3])
        elif len(words) > 2:
            try:
                start, code = datetime.fromisoformat(words[1]).timestamp(), None
            except ValueError:
                continue
    return start, code


def _read(run_dir: Path, key: tuple[str, ...]) -> tuple[RunView, dict]:
    """What the directory holds, the state left to :func:`_classify`."""
    view = RunView(run_dir, key)
    rows = _rows(run_dir / "metrics.csv")
    view.epochs_done = len(rows)
    view.epochs = config_epochs(run_dir)
    view.seconds_per_epoch = _seconds_per_epoch(rows)
    log = run_dir.with_name(run_dir.name + ".log")
    started, exit_code = log_events(log)
    config_time = _mtime(run_dir / "config.yaml")
    writes = [_mtime(run_dir / n) for n in ("metrics.csv", CHECKPOINT_NAME)]
    writes += [config_time, _mtime(log)]
    view.last_write = max((t for t in writes if t is not None), default=None)
    # The current epoch began at the last epoch end or at the (re)start, whichever is later.
    begun = [t for t in (config_time, started) if t is not None]
    ends = [*begun, *([_mtime(run_dir / "metrics.csv") or 0.0] if rows else [])]
    view.epoch_end = max(ends, default=None)
    summary = read_summary(run_dir)
    facts = {
        "status": summary.get("status"),
        "signal": summary.get("signal"),
        "summary_time": _mtime(run_dir / SUMMARY_NAME),
        "began": max(begun, default=None),
        "exit": exit_code,
        "log": log,
    }
    return view, facts


def _classify(view: RunView, facts: dict, now: float, typical: float | None) -> None:
    status, code = facts["status"], facts["exit"]
    if status in DONE_STATES:
        view.state = status
        if view.epochs is None:
            view.epochs = view.epochs_done
        return
    if view.last_write is None:
        return  # not started
    where = f"at epoch {view.epochs_done + 1}"
    if code is not None:
        if code in INTERRUPTED_CODES or status == "interrupted":
            view.state, view.detail = (
                INTERRUPTED,
                f"exit {code} {where}; the same command resumes it",
            )
        else:
            view.state, view.detail = FAILED, f"exit {code} {where}; see {facts['log']}"
        return
    summary_time, began = facts["summary_time"], facts["began"]
    if status == "interrupted" and (began is None or summary_time is None or began <= summary_time):
        signal = facts["signal"] or "a signal"
        view.state, view.detail = INTERRUPTED, f"{signal} {where}; the same command resumes it"
        return
    per_epoch = view.seconds_per_epoch or typical or 0.0
    stale_after = max(STALE_AFTER_S, STALE_EPOCHS * per_epoch)
    quiet = now - view.last_write
    if quiet <= stale_after:
        view.state = RUNNING
    else:
        view.state = STALE
        view.detail = (
            f"no write for {duration(quiet)} (over {duration(stale_after)}): killed, crashed or "
            "its machine stopped? the same command resumes it"
        )


def read_views(
    specs: Sequence[RunSpec], now: float | None = None, epochs: Mapping[Path, int] | None = None
) -> list[RunView]:
    """Every declared run's view, in the declared order. A run without config.yaml takes its
    total epochs from ``epochs``, else from a run of the same key that has one."""
    now = time.time() if now is None else now
    read = [_read(d, tuple(o for o in overrides if not o.startswith("seed=")))
            for d, overrides in specs]  # fmt: skip
    measured = [v.seconds_per_epoch for v, _ in read if v.seconds_per_epoch]
    typical = statistics.median(measured) if measured else None
    by_key = {v.key: v.epochs for v, _ in read if v.epochs is not None}
    for view, facts in read:
        _classify(view, facts, now, typical)
        if view.epochs is None:
            view.epochs = (epochs or {}).get(view.run_dir) or by_key.get(view.key)
    return [v for v, _ in read]


def declared_epochs(specs: Sequence[RunSpec], views: Sequence[RunView]) -> dict[Path, int]:
    """Total epochs of the runs whose views lack them, by composing each such key once."""
    from trainrepro.config import Composer

    compose, by_key, found = Composer(), {}, {}
    for (run_dir, overrides), view in zip(specs, views, strict=True):
        if view.epochs is not None:
            continue
        if view.key not in by_key:
            try:
                by_key[view.key] = int(compose(list(overrides)).epochs)
            except Exception:  # a config that no longer composes: its length stays unknown
                by_key[view.key] = None
        if by_key[view.key] is not None:
            found[run_dir] = by_key[view.key]
    return found


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def eta(views: Sequence[RunView], jobs: int, now: float) -> tuple[float | None, str]:
    """Seconds until the running and not-started runs are done, laid out on ``jobs`` slots
    (running runs first: they hold slots now), and what the estimate rests on.

    A run's seconds per epoch are its own; a run with none takes the median of its key's,
    else of the paper's measured runs (said); its epochs left are its total minus those done,
    less the time already spent in the epoch it is in."""
    measured = [v for v in views if v.seconds_per_epoch]
    if not measured:
        return None, "after the first finished epoch"
    overall = statistics.median(v.seconds_per_epoch for v in measured)
    by_key: dict[tuple[str, ...], list[float]] = {}
    for v in measured:
        by_key.setdefault(v.key, []).append(v.seconds_per_epoch)
    running, queued, borrowed, unknown = [], [], 0, 0
    for v in views:
        if v.state not in (RUNNING, NOT_STARTED):
            continue
        if v.epochs is None:
            unknown += 1
            continue
        per_epoch = v.seconds_per_epoch
        if per_epoch is None:
            same = by_key.get(v.key)
            per_epoch = statistics.median(same) if same else overall
            borrowed += 0 if same else 1
        left = max(v.epochs - v.epochs_done, 0) * per_epoch
        if v.state == RUNNING:
            running.append(max(left - (now - (v.epoch_end or now)), 0.0))
        else:
            queued.append(left)
    epochs = sum(v.epochs_done for v in measured)
    basis = f"{overall:.3g} s per epoch, median of {len(measured)} runs over {epochs} epochs"
    if borrowed:
        basis += f"; {borrowed} runs unlike any measured one counted at it"
    if unknown:
        basis += f"; {unknown} runs of unknown length left out"
    return makespan(running + queued, jobs), basis


def totals_line(views: Sequence[RunView], jobs: int, now: float | None = None) -> str:
    """``N runs: d done (k diverged), r running, l left[, f failed, i interrupted, s stale];
    ETA ...``: the counts in the runner's order, then the time to finish what is running and
    left."""
    now = time.time() if now is None else now
    count = {state: sum(v.state == state for v in views) for state in _ORDER}
    done = count[COMPLETED] + count[DIVERGED]
    text = f"{len(views)} runs: {done} done"
    text += f" ({count[DIVERGED]} diverged)" if count[DIVERGED] else ""
    text += f", {count[RUNNING]} running, {count[NOT_STARTED]} left"
    text += "".join(f", {count[s]} {s}" for s in (FAILED, INTERRUPTED, STALE) if count[s])
    if not count[RUNNING] and not count[NOT_STARTED]:
        return text
    seconds, basis = eta(views, jobs, now)
    if seconds is None:
        return f"{text}; ETA {basis}"
    at = datetime.fromtimestamp(now + seconds, timezone.utc).strftime("%H:%M UTC")
    return f"{text}; ETA about {duration(seconds)} ({at}) at {jobs} at a time ({basis})"


_ORDER = (COMPLETED, DIVERGED, RUNNING, NOT_STARTED, FAILED, INTERRUPTED, STALE)


def status_table(views: Sequence[RunView], run_root: Path, jobs: int, now: float) -> str:
    """One line per run (state, epochs done of its total, seconds per epoch, last write, run,
    why), then the totals line."""
    lines = [f"{'state':<12} {'epochs':>7} {'s/epoch':>8}  {'last write (UTC)':<22}  run"]
    for v in views:
        total = "?" if v.epochs is None else str(v.epochs)
        epochs = f"{v.epochs_done}/{total}" if v.state != NOT_STARTED else f"-/{total}"
        per_epoch = f"{v.seconds_per_epoch:.3g}" if v.seconds_per_epoch else "-"
        written = "-"
        if v.last_write is not None and v.state != NOT_STARTED:
            clock = datetime.fromtimestamp(v.last_write, timezone.utc).strftime("%H:%M:%S")
            written = f"{clock} ({duration(max(now - v.last_write, 0))} ago)"
        name = v.run_dir.relative_to(run_root) if v.run_dir.is_relative_to(run_root) else v.run_dir
        why = f"  {v.detail}" if v.detail else ""
        lines.append(f"{v.state:<12} {epochs:>7} {per_epoch:>8}  {written:<22}  {name}{why}")
    return "\n".join([*lines, totals_line(views, jobs, now)])


def status_report(
    specs: Sequence[RunSpec], run_root: Path, jobs: int, title: str, now: float | None = None
) -> str:
    """``--status``: the heading, the table and the totals, from the run directories alone
    (nothing is written; configs are composed only for runs of a key none of whose runs has
    started)."""
    now = time.time() if now is None else now
    views = read_views(specs, now)
    missing = declared_epochs(specs, views)
    for view in views:
        view.epochs = view.epochs if view.epochs is not None else missing.get(view.run_dir)
    read_at = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = f"{title}: {len(specs)} runs in {run_root}, read {read_at}"
    return head + "\n" + status_table(views, run_root, jobs, now)

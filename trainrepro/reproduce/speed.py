"""The time-to-target table of a report, for papers whose claims are about speed (clr, sgdr,
smith18): per schedule, when its runs first reach one accuracy, in epochs, updates, gradient
evaluations and training seconds (trainrepro/analysis/time_to_target.py), and the ratio to the
fastest schedule on the paper's own axis (a performance-profile ratio, Dolan & Moré 2002).

Each paper chooses its target and says why in the table's note; the claims' verdicts do not
read this table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from trainrepro.analysis.time_to_target import TIMES, over_seeds, time_to_target
from trainrepro.reproduce.paper import Results

# The per-epoch columns the table reads (runs.csv has them; train_seconds since issue 12).
_COLUMNS = ("run_dir", "status", "epoch", "updates", "grad_evals", "samples", "train_seconds",
            "wall_seconds", "test_acc")  # fmt: skip
_SHOWN = ("epochs", "updates", "grad_evals", "seconds")
_HEADS = {"epochs": "epoch", "updates": "updates", "grad_evals": "gradient evals",
          "seconds": "training s"}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of the table: ``runs`` (run_dir values) of one schedule, read against
    ``target``; the ratio column compares rows of the same ``task``."""

    label: str
    runs: Sequence[str]
    target: float
    task: str = ""


def ended(res: Results) -> pd.DataFrame:
    """Final rows of the runs that ended (completed, or diverged: a diverged run never reaches
    the target, and counts as such); unfinished runs are left out."""
    final = res.final()
    return final[final["status"].isin(["completed", "diverged"])]


def mean_final(res: Results, runs: Sequence[str], metric: str = "test_acc") -> float:
    """The mean over ``runs`` of their last epoch's ``metric`` (NaN without runs)."""
    final = res.final()
    values = final.loc[final["run_dir"].isin(list(runs)), metric].astype(float)
    return float(values.mean()) if len(values) else math.nan


def _median(per_run: pd.DataFrame, measure: str) -> float:
    """Over seeds, never reached = inf; NaN when a run that reached it lacks the column (an
    older runs.csv without train_seconds): no data is not "never"."""
    column = per_run[TIMES[measure]]
    if column[per_run["reached"]].isna().any():
        return math.nan
    return over_seeds(column.tolist())


def _show(value: float, measure: str) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "never"
    if measure == "seconds":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def lines(res: Results, rows: Sequence[Row], *, axis: str, why: str) -> list[str]:
    """Markdown lines: the table, then its note (``why``: the target's choice, in words)."""
    rows = [r for r in rows if len(r.runs)]
    if not rows:
        return ["No ended runs to time."]
    cols = [c for c in _COLUMNS if c in res.df.columns]
    medians: list[dict[str, float]] = []
    reached: list[str] = []
    for row in rows:
        sub = res.df.loc[res.df["run_dir"].isin(list(row.runs)), cols]
        per_run = time_to_target(sub, row.target, "test_acc")
        medians.append({m: _median(per_run, m) for m in _SHOWN})
        reached.append(f"{int(per_run['reached'].sum())}/{len(per_run)}")
    best: dict[str, float] = {}
    for row, med in zip(rows, medians, strict=True):
        best[row.task] = min(best.get(row.task, math.inf), med[axis])
    out = [
        "| schedule | target test acc. (%) | runs reaching it | "
        + " | ".join(_HEADS[m] for m in _SHOWN)
        + f" | ÷ fastest ({_HEADS[axis]}) |",
        "|---|---|---|" + "---|" * (len(_SHOWN) + 1),
    ]
    for row, med, got in zip(rows, medians, reached, strict=True):
        fastest = best[row.task]
        ratio = med[axis] / fastest if math.isfinite(med[axis]) and fastest > 0 else med[axis]
        shown = " | ".join(_show(med[m], m) for m in _SHOWN)
        ratio_shown = f"{ratio:.2f}" if math.isfinite(ratio) else _show(ratio, axis)
        out.append(f"| {row.label} | {row.target:.2f} | {got} | {shown} | {ratio_shown} |")
    tasks = "on the same dataset " if len({r.task for r in rows}) > 1 else ""
    out += [
        "",
        f"Target: {why} Each run counts the first epoch end whose test accuracy is at or above "
        "the target (accuracy is read once per epoch, so every count is epoch-granular); the "
        "cells are medians over seeds with a seed that never reaches the target counted as "
        "never, so a median is 'never' when half or more of the seeds never get there (AlgoPerf's "
        "rule, Dahl et al. 2023). Training s: the runs' summed `train_seconds`, the time in "
        "training steps with evaluation excluded, on whatever machine and shared cores each run "
        f"had: compare with care. ÷ fastest: the median {_HEADS[axis]} over that of the fastest "
        f"schedule {tasks}(Dolan & Moré's performance ratio); the claims above do not read this "
        "table.",
    ]
    return out

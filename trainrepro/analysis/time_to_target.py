"""Time to a target accuracy per run, and performance profiles across methods.

A run reaches the target at the first epoch end whose accuracy is at or above it (accuracy is
read once per epoch, so every count is epoch-granular). The counts are the trainer's cumulative
``epoch``, ``updates``, ``grad_evals`` and ``samples`` at that epoch; seconds are the training
steps' own clock, the running sum of ``metrics.csv``'s per-epoch ``train_seconds``
(``time.perf_counter`` around the updates, evaluation and checkpoint writes excluded, as
AlgoPerf excludes evaluation from its time), and ``wall_seconds`` (everything, cumulative).

The performance profile is Dolan & Moré's ("Benchmarking optimization software with
performance profiles", Math. Programming 91, 2002), as AlgoPerf scores training algorithms
(Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms", Sec. 4.5): for method m,
rho_m(tau) = the fraction of tasks on which m's time is within tau x the best time any method
took on that task; a task m never solved never counts, at any tau.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from trainrepro.analysis.curves import config_columns, group_runs
from trainrepro.errors import ConfigError

# --time name -> column of the per-run table; "seconds" is the training clock (module doc).
TIMES = {
    "epochs": "epoch_to_target",
    "updates": "updates_to_target",
    "grad_evals": "grad_evals_to_target",
    "samples": "samples_to_target",
    "seconds": "train_seconds_to_target",
    "wall_seconds": "wall_seconds_to_target",
}
COUNTERS = ("epoch", "updates", "grad_evals", "samples")
AGGREGATES = ("median", "mean")


def choose_metric(df: pd.DataFrame, metric: str = "auto") -> str:
    """``auto``: ``val_acc`` when every run has it (a held-out split, so the target is not
    tuned on the test set), else ``test_acc``."""
    if metric != "auto":
        if metric not in df.columns:
            raise ConfigError("metric", metric, "not a column of the runs")
        return metric
    if "val_acc" in df.columns:
        has_val = pd.to_numeric(df["val_acc"], errors="coerce").notna().groupby(df["run_dir"])
        per_run = has_val.any()
        if per_run.all():
            return "val_acc"
        if per_run.any():
            warnings.warn(
                f"val_acc in {int(per_run.sum())} of {len(per_run)} runs only: using test_acc "
                "for all (one metric across runs)",
                stacklevel=2,
            )
    if "test_acc" not in df.columns:
        raise ConfigError("metric", "test_acc", "no test_acc (nor val_acc) column in the runs")
    return "test_acc"


def _first_reach(curve: pd.DataFrame, metric: str, target: float) -> dict[str, float]:
    """The counters at the first epoch end with ``metric >= target`` (NaN when never)."""
    curve = curve.sort_values("epoch", kind="stable")
    values = pd.to_numeric(curve[metric], errors="coerce")
    # train_seconds is per epoch in metrics.csv (reset at each epoch end): summed here.
    if "train_seconds" in curve:
        train = pd.to_numeric(curve["train_seconds"], errors="coerce").cumsum()
    else:
        train = pd.Series(np.nan, index=curve.index)
    columns = {f"{c}_to_target": curve[c] if c in curve else None for c in COUNTERS}
    columns["train_seconds_to_target"] = train
    columns["wall_seconds_to_target"] = curve.get("wall_seconds")
    # 1e-9: a target read back from a table equals the accuracy it came from, up to rounding.
    hit = values >= target - 1e-9
    at = hit.idxmax() if hit.any() else None
    out = {}
    for name, column in columns.items():
        value = math.nan if at is None or column is None else column.loc[at]
        out[name] = float(pd.to_numeric(value, errors="coerce"))
    finite = values[np.isfinite(values)]
    out["final"] = float(finite.iloc[-1]) if len(finite) else math.nan
    out["best"] = float(finite.max()) if len(finite) else math.nan
    return out


def time_to_target(df: pd.DataFrame, target: float, metric: str = "auto") -> pd.DataFrame:
    """One row per run of a collected table (``curves.collect``): when ``metric`` first
    reached ``target``.

    Columns: ``run_dir``, ``status``, ``metric`` (the accuracy column read), ``target``,
    ``reached``, ``epoch_to_target``, ``updates_to_target``, ``grad_evals_to_target``,
    ``samples_to_target``, ``train_seconds_to_target`` (training clock, see the module doc),
    ``wall_seconds_to_target``, ``final_<metric>``, ``best_<metric>``, ``epochs`` (the run's
    last epoch), then the config columns. A run that never reaches the target has empty
    times and ``reached`` False: unsolved.
    """
    if df.empty or "run_dir" not in df.columns or "epoch" not in df.columns:
        raise ConfigError("runs", len(df), "no metrics rows (with run_dir and epoch)")
    metric = choose_metric(df, metric)
    # A resumed run may have re-logged epochs; its latest row counts.
    df = df.drop_duplicates(["run_dir", "epoch"], keep="last")
    cfg = config_columns(df)
    rows = []
    for run, curve in df.groupby("run_dir", sort=False):
        got = _first_reach(curve, metric, target)
        row = {"run_dir": run, "status": curve["status"].iloc[0] if "status" in curve else None,
               "metric": metric, "target": float(target),
               "reached": not math.isnan(got["epoch_to_target"])}  # fmt: skip
        row.update({k: v for k, v in got.items() if k.endswith("_to_target")})
        row[f"final_{metric}"], row[f"best_{metric}"] = got["final"], got["best"]
        row["epochs"] = int(curve["epoch"].max())
        row.update({c: curve[c].iloc[0] for c in cfg})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs = {"config_columns": cfg, "metric": metric, "target": float(target)}
    return out


def _keys(keys: str | Sequence[str] | None) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [k.strip() for k in keys.split(",") if k.strip()]
    return list(keys)


def over_seeds(times: Sequence[float], agg: str = "median") -> float:
    """One time from a method's seeds on a task; a seed that never reached the target is +inf.

    ``median`` (AlgoPerf's rule over its repeated studies): unsolved when half or more of the
    seeds are; ``mean``: unsolved when any seed is.
    """
    if agg not in AGGREGATES:
        raise ConfigError("over_seeds", agg, f"one of {', '.join(AGGREGATES)}")
    values = np.array([math.inf if math.isnan(t) else t for t in times], dtype=float)
    if not len(values):
        return math.inf
    if agg == "mean":
        return float(values.mean())
    # np.median averages the two middle values: with one of them inf, the median is inf.
    return float(np.median(values))


def task_times(
    per_run: pd.DataFrame,
    *,
    method_keys: str | Sequence[str],
    task_keys: str | Sequence[str] | None = None,
    time: str = "updates",
    agg: str = "median",
) -> pd.DataFrame:
    """Methods x tasks: each method's time to target on each task over its seeds (+inf:
    unsolved, or no run of that method on that task). Rows and columns are labels built from
    the keys' values (``optimizer.name=sgd``); no task keys: one task, "all runs"."""
    if time not in TIMES:
        raise ConfigError("time", time, f"one of {', '.join(TIMES)}")
    methods, tasks = _keys(method_keys), _keys(task_keys)
    if not methods:
        raise ConfigError("method_key", method_keys, "name at least one config key")
    missing = [k for k in (*methods, *tasks) if k not in per_run.columns]
    if missing:
        valid = ", ".join(config_columns(per_run))
        raise ConfigError("method_key/task_key", missing, f"not columns of the runs; {valid}")
    column = TIMES[time]
    if per_run[per_run["reached"]][column].isna().any():
        raise ConfigError("time", time, f"the runs have no {column.removesuffix('_to_target')}")
    table: dict[str, dict[str, float]] = {}
    method_labels = [label for label, _, _ in group_runs(per_run, methods)]
    task_groups = (
        group_runs(per_run, tasks) if tasks else [("all runs", {}, list(per_run["run_dir"]))]
    )
    for task, _, task_runs in task_groups:
        sub = per_run[per_run["run_dir"].isin(task_runs)]
        found = {label: runs for label, _, runs in group_runs(sub, methods)}
        table[task] = {
            m: over_seeds(sub[sub["run_dir"].isin(found[m])][column].tolist(), agg)
            if m in found else math.inf
            for m in method_labels
        }  # fmt: skip
    out = pd.DataFrame(table, index=method_labels, dtype=float)
    out.index.name, out.columns.name = "method", "task"
    out.attrs = {"time": time, "agg": agg}
    return out


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """Each method's time over the best method's time on the same task (Dolan & Moré's r);
    +inf where the method did not solve the task or no method did."""
    best = times.min(axis=0)
    r = times / best.replace(0.0, np.nan)  # a best time of 0 (nothing to train): ratio 1
    r = r.where(~((times == 0) & (best == 0)), 1.0)
    return r.where(np.isfinite(r), math.inf)


def performance_profile(times: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """rho_m(tau) per method (columns) at each tau (rows): the fraction of all tasks solved
    within tau x the best time on the task."""
    r = ratios(times)
    n_tasks = times.shape[1]
    rows = {float(t): (r <= t).sum(axis=1) / n_tasks for t in taus}
    out = pd.DataFrame(rows).T
    out.index.name = "tau"
    return out


def profile_taus(times: pd.DataFrame, n: int = 200) -> np.ndarray:
    """Log-spaced taus from 1 past the largest finite ratio (at least 2), and every finite
    ratio itself, so each step of the profile is drawn where it happens."""
    r = ratios(times).to_numpy().ravel()
    finite = r[np.isfinite(r)]
    top = max(2.0, float(finite.max()) * 1.25 if len(finite) else 2.0)
    return np.unique(np.concatenate([np.geomspace(1.0, top, n), finite]))


def plot_profile(times: pd.DataFrame, out: str | Path, title: str | None = None) -> Path:
    """The performance profile as a step plot, tau on a log axis; writes ``out`` (any
    matplotlib format by its suffix; no suffix: .png) and returns its path."""
    out = Path(out)
    if not out.suffix:
        out = out.with_suffix(".png")
    taus = profile_taus(times)
    profile = performance_profile(times, taus)
    n_tasks = times.shape[1]
    fig = Figure(figsize=(6.5, 4.2 + 0.22 * len(profile.columns)), layout="constrained")
    ax = fig.subplots()
    for i, method in enumerate(profile.columns):
        solved = int(np.isfinite(times.loc[method]).sum())
        ax.step(profile.index, profile[method], where="post", color=f"C{i % 10}", lw=1.6,
                label=f"{method} ({solved}/{n_tasks} solved)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(1.0, float(taus[-1]))
    ax.set_ylim(-0.02, 1.02)
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, not 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    agg = times.attrs.get("agg", "median")
    ax.set_xlabel(f"τ: time ÷ the best method's time on the task\n(time: "
                  f"{times.attrs.get('time', '?')}, {agg} over seeds)")  # fmt: skip
    ax.set_ylabel("fraction of tasks solved within τ")
    ax.grid(alpha=0.3, which="both")
    # Below the axes: curves of equal methods overlap, and a legend inside would hide them.
    fig.legend(loc="outside lower center", fontsize="small", ncols=1)
    ax.set_title(title or f"Performance profile over {n_tasks} task(s) (Dolan & Moré 2002)",
                 fontsize="medium")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    return out

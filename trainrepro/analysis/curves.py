"""Collect run directories into one tidy table and plot learning curves grouped by config.

A run directory is any folder holding the trainer's ``metrics.csv`` (one row per epoch), next
to ``config.yaml`` (the resolved config) and ``summary.json`` (final status). Hydra multiruns
nest them arbitrarily deep, so the search is recursive. Curves of runs that differ only by
seed are averaged with a shaded spread band, as in the papers being reproduced (e.g. Wu & He,
"Group Normalization", 2018, report the mean over repeated runs).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from trainrepro.errors import ConfigError

METRICS_FILE = "metrics.csv"
RUN_COLUMNS = ("run_dir", "status")
CONFIG_PREFIX = "config."  # config keys that clash with a metrics column (e.g. batch_size)
DEFAULT_METRICS = ("test_acc", "train_acc", "test_loss", "train_loss")
BANDS = {"minmax": "min–max over runs", "std": "±1 std over runs", "none": ""}
# The trainer's per-epoch columns; used only to tell metrics from config columns when a table
# lost its ``attrs`` (e.g. after a CSV round trip).
KNOWN_METRICS = frozenset(
    "epoch updates samples grad_evals lr batch_size momentum noise_scale train_loss train_acc "
    "test_loss test_acc val_loss val_acc epoch_seconds wall_seconds".split()
)
# Config keys that differ between runs without defining an experimental condition.
_NOT_A_CONDITION = re.compile(r"(^|\.)([^.]*seed[^.]*|resume|progress|[^.]*(dir|path|root|file))$")


def _natural_key(path: Path) -> list[object]:
    """Sort multirun job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _runs_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root.parent] if root.name == METRICS_FILE else []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .hydra, .git
        if METRICS_FILE in filenames:
            found.append(Path(dirpath))
    return found


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: run dirs, parents searched recursively, or globs."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    runs: dict[Path, Path] = {}
    for path in paths:
        if any(c in str(path) for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
        else:
            matches = [path] if path.exists() else []
        if not matches:
            raise ConfigError(
                "runs", str(path), "no such file or directory (or glob matches nothing)"
            )
        for match in matches:
            for run in _runs_under(match):
                runs.setdefault(run.resolve(), run)
    if not runs:
        shown = [str(p) for p in paths]
        raise ConfigError("runs", shown, f"no run directory (a folder with {METRICS_FILE}) found")
    return sorted(runs.values(), key=_natural_key)


def _render(value: object) -> object:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(_render(v)) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    return value


def flatten_config(cfg: Mapping) -> dict[str, object]:
    """``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``; lists become strings.

    Hydra's special keys (``_target_``, ``_partial_``, ...) are dropped: they name code, not
    experimental conditions.
    """
    if not isinstance(cfg, dict):
        cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    flat: dict[str, object] = {}
    for key, value in cfg.items():
        key = str(key)
        if key.startswith("_") and key.endswith("_") and len(key) > 2:
            continue
        if isinstance(value, Mapping) and value:
            flat.update({f"{key}.{k}": v for k, v in flatten_config(value).items()})
        else:
            flat[key] = _render(value)
    return flat


def _read_status(run_dir: Path) -> str:
    path = run_dir / "summary.json"
    if not path.exists():
        return "running"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable ({exc}); status 'unknown'", stacklevel=3)
        return "unknown"
    if "status" in summary:
        return str(summary["status"])
    return "diverged" if summary.get("diverged") else "unknown"


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """One run's metrics rows, with its flattened config as constant columns.

    Adds ``run_dir`` and ``status`` (from summary.json, "running" when absent). A config key
    that clashes with a metrics column (``batch_size``) is renamed ``config.<key>``. The
    config column names are kept in ``df.attrs["config_columns"]``.
    """
    run_dir = Path(run_dir)
    if run_dir.name == METRICS_FILE:
        run_dir = run_dir.parent
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.exists():
        raise ConfigError("run_dir", str(run_dir), f"has no {METRICS_FILE}")
    try:
        metrics = pd.read_csv(metrics_path)
    except pd.errors.EmptyDataError:
        metrics = pd.DataFrame()
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        config = flatten_config(OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True))
    else:
        warnings.warn(f"{run_dir}: no config.yaml; no config columns", stacklevel=2)
        config = {}
    taken = set(metrics.columns) | set(RUN_COLUMNS)
    config = {(CONFIG_PREFIX + k if k in taken else k): v for k, v in config.items()}
    head = pd.DataFrame(
        {"run_dir": str(run_dir), "status": _read_status(run_dir)}, index=metrics.index
    )
    consts = pd.DataFrame({k: [v] * len(metrics) for k, v in config.items()}, index=metrics.index)
    df = pd.concat([head, metrics, consts], axis=1)
    df.attrs.update(config_columns=list(config), run_dir=str(run_dir))
    return df


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All runs found under ``paths`` in one table (union of columns, NaN where absent)."""
    frames = [load_run(run) for run in find_runs(paths)]
    config_columns: dict[str, None] = {}
    for frame in frames:
        config_columns.update(dict.fromkeys(frame.attrs["config_columns"]))
    # An empty frame's columns are object dtype and would turn every metric into object.
    empty = [f for f in frames if f.empty]
    if empty and len(empty) < len(frames):
        names = ", ".join(f.attrs["run_dir"] for f in empty)
        warnings.warn(f"{len(empty)} run(s) without metrics rows yet: {names}", stacklevel=2)
        frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True)
    # Config columns last, so the per-epoch metrics stay together.
    first = [c for c in df.columns if c not in config_columns]
    df = df[first + list(config_columns)]
    df.attrs = {"config_columns": list(config_columns)}
    return df


def config_columns(df: pd.DataFrame) -> list[str]:
    """The config columns of a collected table, from ``attrs`` or, failing that, by guessing."""
    if "config_columns" in df.attrs:
        return [c for c in df.attrs["config_columns"] if c in df.columns]
    by_run = df.groupby("run_dir", sort=False) if "run_dir" in df.columns else None
    guessed = []
    for col in df.columns:
        if col in RUN_COLUMNS or col in KNOWN_METRICS:
            continue
        constant = by_run is None or (by_run[col].nunique(dropna=False) <= 1).all()
        if "." in col or constant:
            guessed.append(col)
    return guessed


def default_group_keys(df: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between runs, except seeds and paths.

    When ``<group>.name`` differs (sgd vs adam), the ``<group>.*`` keys it determines (the
    options' own defaults: momentum, betas, ...) are left out; the groups are the same, and
    the labels stay readable.
    """
    per_run = df.groupby("run_dir", sort=False).first()
    keys = [
        c
        for c in config_columns(df)
        if not _NOT_A_CONDITION.search(c) and per_run[c].nunique(dropna=False) > 1
    ]

    def implied(key: str) -> bool:
        group, _, leaf = key.rpartition(".")
        name = f"{group}.name"
        if not group or leaf == "name" or name not in keys:
            return False
        values = per_run[key].astype(str)  # str: NaN and None count as one value
        return bool((values.groupby(per_run[name].astype(str)).nunique() <= 1).all())

    return [k for k in keys if not implied(k)]


def _show(value: object) -> str:
    if isinstance(value, float | np.floating):  # ints come back as floats where NaN is mixed in
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _sort_key(values: tuple) -> tuple:
    """Numbers by value, then strings, then missing values: never compares a str to a float."""
    number = (int, float, np.number)
    return tuple(
        (2, 0.0, "") if _missing(v)
        else (0, float(v), "") if isinstance(v, number) and not isinstance(v, bool)
        else (1, 0.0, str(v))
        for v in values
    )  # fmt: skip


def _check_columns(df: pd.DataFrame, x: str, metrics: Sequence[str], keys: Sequence[str]) -> None:
    if df.empty or "run_dir" not in df.columns or "epoch" not in df.columns:
        raise ConfigError("runs", len(df), "no metrics rows (with run_dir and epoch) to plot")
    cfg = set(config_columns(df))
    numeric = [
        c
        for c in df.columns
        if c not in cfg and c not in RUN_COLUMNS and pd.api.types.is_numeric_dtype(df[c])
    ]
    if x not in numeric:
        raise ConfigError("x", x, f"not a numeric metrics column; valid: {', '.join(numeric)}")
    bad = [m for m in metrics if m not in numeric]
    if bad or not metrics:
        raise ConfigError("metrics", list(bad), f"not metrics columns; valid: {', '.join(numeric)}")
    bad = [k for k in keys if k not in df.columns]
    if bad:
        valid = ", ".join([*RUN_COLUMNS, *config_columns(df)])
        raise ConfigError("group_by", list(bad), f"not columns; valid: {valid}")


def group_runs(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[str, dict, list[str]]]:
    """``(label, {key: value}, run_dirs)`` per group, sorted by the keys' values."""
    per_run = df.groupby("run_dir", sort=False)[list(keys)].first() if keys else None
    groups: dict[tuple, list[str]] = {}
    for run in df["run_dir"].drop_duplicates():
        values = tuple(per_run.loc[run]) if keys else ()
        match = next((g for g in groups if _same(g, values)), values)
        groups.setdefault(match, []).append(run)
    out = []
    for values in sorted(groups, key=_sort_key):
        shown = {k: v for k, v in zip(keys, values, strict=True) if not _missing(v)}
        label = ", ".join(f"{k}={_show(v)}" for k, v in shown.items()) or "all runs"
        out.append((label, dict(zip(keys, values, strict=True)), groups[values]))
    return out


def _same(a: tuple, b: tuple) -> bool:
    # NaN != NaN, so missing values need their own equality to land in one group.
    return all((_missing(u) and _missing(v)) or u == v for u, v in zip(a, b, strict=True))


def aggregate_curves(
    df: pd.DataFrame,
    *,
    x: str = "epoch",
    metrics: Sequence[str] = DEFAULT_METRICS,
    group_by: Sequence[str] = (),
) -> pd.DataFrame:
    """Per group, metric and epoch: mean x and mean/std/min/max of the metric over runs.

    Runs are aligned by epoch (not x), so runs whose x differs slightly at an epoch still
    average; non-finite values (a diverged loss) are left out. Columns: ``group``,
    ``metric``, ``epoch``, ``x``, ``mean``, ``std``, ``min``, ``max``, ``n`` (runs with a
    value), ``runs`` (runs in the group).
    """
    _check_columns(df, x, metrics, group_by)
    keys = list(group_by) if group_by else default_group_keys(df)
    # A resumed run may have re-logged epochs; its latest row counts.
    df = df.drop_duplicates(["run_dir", "epoch"], keep="last")
    parts = []
    for label, _values, runs in group_runs(df, keys):
        sub = df[df["run_dir"].isin(runs)]
        xs = sub.groupby("epoch")[x].mean()
        for metric in metrics:
            vals = pd.to_numeric(sub[metric], errors="coerce").replace([np.inf, -np.inf], np.nan)
            stats = vals.groupby(sub["epoch"]).agg(["mean", "std", "min", "max", "count"])
            stats = stats[stats["count"] > 0].rename(columns={"count": "n"})
            stats.insert(0, "x", xs.reindex(stats.index))
            stats = stats.reset_index()
            stats.insert(0, "metric", metric)
            stats.insert(0, "group", label)
            stats["runs"] = len(runs)
            parts.append(stats)
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(x=x, group_by=keys)
    return out


def _output_paths(out: str | Path) -> list[Path]:
    out = Path(out)
    if out.suffix.lower() in (".png", ".pdf"):
        out = out.with_suffix("")
    return [out.parent / f"{out.name}.png", out.parent / f"{out.name}.pdf"]


def _colors(n: int) -> list[tuple]:
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def plot_curves(
    df: pd.DataFrame,
    *,
    x: str = "epoch",
    metrics: Sequence[str] = DEFAULT_METRICS,
    group_by: Sequence[str] = (),
    out: str | Path,
    title: str | None = None,
    logx: bool = False,
    band: str = "minmax",
) -> list[Path]:
    """One subplot per metric, one line (mean over the group's runs) per group.

    ``band`` shades "minmax" or "std" around the mean, or "none". ``group_by`` empty means the
    config keys that differ between runs (seeds and paths excluded). A diverged run's last
    finite point is marked with an x. Writes ``out.png`` and ``out.pdf``; returns their paths.
    """
    if band not in BANDS:
        raise ConfigError("band", band, f"must be one of {', '.join(BANDS)}")
    metrics = list(metrics)
    agg = aggregate_curves(df, x=x, metrics=metrics, group_by=group_by)
    groups = group_runs(df, agg.attrs["group_by"])
    diverged = df.groupby("run_dir", sort=False)["status"].first() == "diverged"

    ncols = min(len(metrics), 2)
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 3.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    any_diverged = False
    for ax, metric in zip(axes, metrics, strict=False):
        for color, (label, _values, runs) in zip(_colors(len(groups)), groups, strict=True):
            a = agg[(agg["group"] == label) & (agg["metric"] == metric)].sort_values("epoch")
            name = f"{label} (n={len(runs)})" if len(runs) > 1 else label
            style = {"marker": "o", "ms": 3} if len(a) == 1 else {}
            ax.plot(a["x"], a["mean"], color=color, lw=1.5, label=name, **style)
            if band != "none" and len(runs) > 1:
                lo, hi = (
                    (a["min"], a["max"])
                    if band == "minmax"
                    else (a["mean"] - a["std"].fillna(0), a["mean"] + a["std"].fillna(0))
                )
                ax.fill_between(a["x"], lo, hi, color=color, alpha=0.2, lw=0)
            for run in (r for r in runs if diverged.get(r, False)):
                rows = df[df["run_dir"] == run]
                finite = rows[np.isfinite(pd.to_numeric(rows[metric], errors="coerce"))]
                if len(finite):  # the run's own last finite point, not the group mean
                    any_diverged = True
                    ax.plot(finite[x].iloc[-1], finite[metric].iloc[-1], "x", color=color, mew=2)
        if agg[agg["metric"] == metric].empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
        elif logx:  # an empty log axis cannot place its ticks
            ax.set_xscale("log")
        elif pd.api.types.is_integer_dtype(df[x]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{metric} (%)" if metric.endswith("_acc") else metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)

    handles, labels = axes[0].get_legend_handles_labels()
    if any_diverged:
        handles.append(Line2D([], [], color="k", marker="x", ls="none", mew=2))
        labels.append("diverged (last finite value)")
    # Below the panels: group labels can be long and would hide curves.
    wide = max(len(lab) for lab in labels) > 40
    ncol = 1 if wide else ncols * 2
    fig.legend(handles, labels, loc="outside lower center", ncols=ncol, fontsize="small")
    n_runs = df["run_dir"].nunique()
    heading = title or f"{n_runs} run(s) in {len(groups)} group(s)"
    spread = f"; shaded: {BANDS[band]}" if band != "none" else ""
    fig.suptitle(f"{heading}\nline: mean over the runs in a group{spread}", fontsize="medium")

    paths = _output_paths(out)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths

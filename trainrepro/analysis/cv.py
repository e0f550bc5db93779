"""``trainrepro cv``: k-fold cross-validation over a grid of overrides, in one restartable command.

    trainrepro cv model=lenet5 dataset=mnist optimizer=adam epochs=20 \\
        --grid optimizer.lr=1e-3,1e-4 --folds 4 --root runs/cv/adam

Every grid point is trained on each of ``--folds`` stratified folds (``dataset.folds=K
dataset.fold=k``: fold k is the validation split, the rest of the training split is trained on;
trainrepro.data.splits) in ``<root>/<point>/fold<k>``, through the restartable runner
(trainrepro.engine.runner), so running the same command again keeps finished runs and
resumes interrupted ones. Then, per point, the mean ± std (and range) over folds of the last
epoch's validation metric goes to ``<root>/cv.csv`` and a table; the best point (lowest loss or
highest accuracy; a point with a diverged or missing fold is not eligible) goes to
``<root>/selected.json``, and is trained once more on the whole training split in
``<root>/final``, whose test metrics are added to selected.json. This is the 4-fold procedure
of Apostolov's report (Sec. 4.1: grid search, selection on the validation loss averaged over
the folds at the end of training, then a test run of the selected setting).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from trainrepro.engine import placement as placing
from trainrepro.engine.runner import RunSpec, dry_run_lines, run_all
from trainrepro.errors import ConfigError

Grid = list[tuple[str, list[str]]]  # (key, values) per --grid
FOLD_KEYS = ("dataset.folds", "dataset.fold", "dataset.val_fraction")


def parse_grid(spec: str) -> tuple[str, list[str]]:
    """``optimizer.lr=0.1,0.01`` -> ("optimizer.lr", ["0.1", "0.01"])."""
    key, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not key.strip() or not all(items):
        raise ConfigError("--grid", spec, "must be KEY=V1,V2,... with at least one value")
    if key.strip() in FOLD_KEYS:
        raise ConfigError("--grid", spec, "the folds are set by --folds, not a grid")
    return key.strip(), items


def grid_points(grid: Grid) -> list[tuple[str, ...]]:
    """The cartesian product of the grid, each point a tuple of ``key=value`` overrides."""
    if not grid:
        return [()]
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys):
        raise ConfigError("--grid", ",".join(keys), "names a key twice")
    return [
        tuple(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        for values in itertools.product(*(v for _, v in grid))
    ]


def point_name(point: Sequence[str]) -> str:
    """A folder name for a grid point: ``optimizer.lr=0.1 optimizer.c=10`` -> ``lr0.1_c10``."""
    if not point:
        return "default"
    parts = []
    for override in point:
        key, _, value = override.partition("=")
        parts.append(key.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.+-]", "", value))
    return "_".join(parts)


def fold_overrides(folds: int, fold: int) -> tuple[str, ...]:
    return (f"dataset.folds={folds}", f"dataset.fold={fold}", "dataset.val_fraction=0.0")


def cv_specs(
    root: Path, base: Sequence[str], points: Sequence[tuple[str, ...]], folds: int
) -> list[RunSpec]:
    """``(run dir, overrides)`` of every (point, fold), points in grid order."""
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("--grid", " ".join(map(" ".join, points)), "two points share a folder")
    return [
        (root / name / f"fold{k}", [*base, *point, *fold_overrides(folds, k)])
        for name, point in zip(names, points, strict=True)
        for k in range(folds)
    ]


def _final_row(run_dir: Path) -> tuple[str, dict | None]:
    """(status, last metrics row) of a run directory; status "missing" without one."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return "missing", None
    record = json.loads(summary.read_text())
    return record.get("status", "missing"), record.get("final") or None


def summarize(
    root: Path, points: Sequence[tuple[str, ...]], folds: int, metric: str
) -> pd.DataFrame:
    """Per point: folds completed and diverged, and the mean, std, min and max over completed
    folds of ``metric`` at the last epoch."""
    rows = []
    for point in points:
        values, statuses = [], []
        for k in range(folds):
            status, final = _final_row(root / point_name(point) / f"fold{k}")
            statuses.append(status)
            if status == "completed" and final and final.get(metric) is not None:
                values.append(float(final[metric]))
        s = pd.Series(values, dtype=float)
        rows.append({
            "point": point_name(point),
            "overrides": " ".join(point),
            "folds": folds,
            "completed": statuses.count("completed"),
            "diverged": statuses.count("diverged"),
            "mean": s.mean() if len(s) else math.nan,
            "std": s.std() if len(s) > 1 else math.nan,
            "min": s.min() if len(s) else math.nan,
            "max": s.max() if len(s) else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def higher_is_better(metric: str) -> bool:
    return metric.endswith("acc")


def select(table: pd.DataFrame, metric: str) -> pd.Series | None:
    """The best point whose every fold completed with a finite metric, or None."""
    ok = table[(table["completed"] == table["folds"]) & table["mean"].map(math.isfinite)]
    if ok.empty:
        return None
    return ok.loc[ok["mean"].idxmax() if higher_is_better(metric) else ok["mean"].idxmin()]


def markdown(table: pd.DataFrame, metric: str, chosen: pd.Series | None) -> str:
    lines = [
        f"| grid point | folds done | diverged | {metric} mean ± std (min–max) |",
        "|---|---|---|---|",
    ]
    for row in table.itertuples():
        mark = " **(selected)**" if chosen is not None and row.point == chosen["point"] else ""
        lines.append(
            f"| `{row.overrides or 'default'}`{mark} | {row.completed}/{row.folds} | "
            f"{row.diverged} | {row.mean:.4g} ± {row.std:.2g} ({row.min:.4g}–{row.max:.4g}) |"
        )
    return "\n".join(lines)


def default_root(base: Sequence[str], grid: Grid, folds: int) -> Path:
    """``runs/cv/<hash>``: the same command lands in the same folder, so it continues."""
    text = json.dumps([list(base), grid, folds])
    return Path("runs") / "cv" / hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainrepro cv", description=__doc__.split("\n\n")[0].replace("``", "`")
    )
    p.add_argument("overrides", nargs="*", help="overrides every run gets (key=value)")
    p.add_argument("--grid", action="append", default=[], help="KEY=V1,V2 (repeatable)")
    p.add_argument("--folds", type=int, default=4, help="number of folds (default 4)")
    p.add_argument("--metric", default="val_loss", help="val_loss (default) or val_acc")
    p.add_argument("--root", type=Path, help="default: runs/cv/<hash of the command>")
    placing.add_arguments(p, jobs_help="runs at a time (default 1)")
    p.add_argument("--no-final", action="store_true", help="select, but train no final run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state")
    return p


def run(argv: Sequence[str]) -> int:
    from trainrepro.config import check_overrides

    args = parser().parse_intermixed_args(list(argv))
    if args.folds < 2:
        raise ConfigError("--folds", args.folds, "must be >= 2")
    if args.metric not in ("val_loss", "val_acc"):
        raise ConfigError("--metric", args.metric, "must be val_loss or val_acc")
    where = placing.plan(args.jobs, args.threads, args.gpus, args.jobs_per_gpu)
    base = list(args.overrides)
    for override in base:
        if override.split("=", 1)[0].lstrip("+") in FOLD_KEYS:
            raise ConfigError(override.split("=", 1)[0], override, "is set by trainrepro cv")
    grid = [parse_grid(g) for g in args.grid]
    points = grid_points(grid)
    for point in points:  # every config composes before anything runs
        check_overrides([*base, *point, *fold_overrides(args.folds, 0)])
    root = args.root or default_root(base, grid, args.folds)
    specs = cv_specs(root, base, points, args.folds)
    if args.dry_run:
        print("\n".join(dry_run_lines(specs)))
        print(f"{len(specs)} runs ({len(points)} points x {args.folds} folds) in {root}; then "
              f"the selected point on the whole training split in {root / 'final'}")  # fmt: skip
        return 0
    print(f"{len(specs)} runs, {where.describe()}" + (f"; {where.note}" if where.note else ""))
    failed = run_all(specs, where)
    table = summarize(root, points, args.folds, args.metric)
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "cv.csv", index=False)
    chosen = select(table, args.metric)
    print(markdown(table, args.metric, chosen))
    print(f"table: {root / 'cv.csv'}")
    if chosen is None:
        print("error: no grid point completed every fold; nothing selected", file=sys.stderr)
        return 1
    record = {
        "overrides": base,
        "selected": chosen["overrides"].split(),
        "metric": args.metric,
        "mean": chosen["mean"],
        "std": chosen["std"],
        "folds": args.folds,
        "failed_runs": failed,
    }
    print(f"selected: {chosen['overrides'] or 'default'} ({args.metric} {chosen['mean']:.4g})")
    if not args.no_final:
        final_dir = root / "final"
        one = placing.Placement(1, args.threads, where.gpus[:1], 1)  # one run: all cores, one GPU
        if run_all([(final_dir, [*base, *record["selected"]])], one):
            print(f"error: the final run in {final_dir} failed", file=sys.stderr)
            return 1
        _, final = _final_row(final_dir)
        record["final"] = {"run_dir": str(final_dir), **{
            k: (final or {}).get(k) for k in ("epoch", "grad_evals", "test_loss", "test_acc")
        }}  # fmt: skip
        print(f"final: test_loss {record['final']['test_loss']}, "
              f"test_acc {record['final']['test_acc']} ({final_dir})")  # fmt: skip
    (root / "selected.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"selected point: {root / 'selected.json'}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

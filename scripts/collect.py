"""Collect run directories (metrics.csv + config.yaml + summary.json) into one tidy CSV.

python scripts/collect.py runs/multirun/2024-01-01 runs/single -o results/all.csv

With --target, also the time each run took to reach that accuracy (one row per run; see
trainrepro/analysis/time_to_target.py), and with --method-key a performance profile across
methods (Dolan & Moré 2002, as AlgoPerf: Dahl et al. 2023):

python scripts/collect.py runs/sweep -o all.csv --target 90 --method-key optimizer.name \
    --task-key model.name,dataset.name --time updates --profile-plot profile.png
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

try:
    from trainrepro.analysis import time_to_target as ttt
    from trainrepro.analysis.curves import collect
    from trainrepro.errors import ConfigError
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.analysis import time_to_target as ttt
    from trainrepro.analysis.curves import collect
    from trainrepro.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs, parents (searched recursively), globs")
    parser.add_argument("-o", "--output", type=Path, help="CSV to write (default: stdout)")
    group = parser.add_argument_group("time to target")
    group.add_argument("--target", type=float, help="accuracy (%%) to reach, e.g. 90")
    group.add_argument("--metric", default="auto",
                       help="accuracy column read (default auto: val_acc when every run has "
                       "it, else test_acc)")  # fmt: skip
    group.add_argument("--target-output", type=Path,
                       help="per-run time-to-target CSV (default: beside -o as "
                       "<name>.time_to_target.csv; without -o: stdout, instead of the tidy "
                       "CSV)")  # fmt: skip
    group.add_argument("--method-key", help="config key(s) naming a method, comma-separated")
    group.add_argument("--task-key", help="config key(s) naming a task (default: one task)")
    group.add_argument("--time", default="updates", choices=list(ttt.TIMES),
                       help="time measure of the profile (seconds: the training clock, "
                       "evaluation excluded)")  # fmt: skip
    group.add_argument("--over-seeds", default="median", choices=ttt.AGGREGATES,
                       help="a method's time on a task from its seeds (median: unsolved when "
                       "half or more never reach the target; mean: when any does not)")  # fmt: skip
    group.add_argument("--profile-plot", type=Path, help="performance profile figure to write")
    return parser


def _target_outputs(args: argparse.Namespace, df, summary: str) -> int:
    per_run = ttt.time_to_target(df, args.target, args.metric)
    solved = int(per_run["reached"].sum())
    metric = per_run.attrs["metric"]
    lines = [f"{metric} >= {args.target:g}: reached by {solved} of {len(per_run)} runs "
             f"({len(per_run) - solved} unsolved)"]  # fmt: skip
    path = args.target_output
    if path is None and args.output is not None:
        path = args.output.with_name(args.output.stem + ".time_to_target.csv")
    if path is None:
        per_run.to_csv(sys.stdout, index=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        per_run.to_csv(path, index=False)
        lines.append(f"wrote {path}")
    if args.method_key:
        times = ttt.task_times(per_run, method_keys=args.method_key, task_keys=args.task_key,
                               time=args.time, agg=args.over_seeds)  # fmt: skip
        for method, row in times.iterrows():
            lines.append(f"  {method}: solved {int((row < float('inf')).sum())} of {len(row)} "
                         f"task(s); {args.over_seeds} {args.time} per task: "
                         + ", ".join(f"{t}={v:g}" for t, v in row.items()))  # fmt: skip
        if args.profile_plot is not None:
            lines.append(f"wrote {ttt.plot_profile(times, args.profile_plot)}")
    # As without --target: messages on stdout when the CSVs went to files.
    stream = sys.stdout if args.output is not None else sys.stderr
    print("\n".join([summary, *lines]), file=stream)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.target is None and (args.method_key or args.profile_plot or args.target_output):
        parser.error("--method-key, --profile-plot and --target-output need --target")
    if args.profile_plot is not None and not args.method_key:
        parser.error("--profile-plot needs --method-key")
    warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr)
    try:
        df = collect(args.runs)
        statuses = df.groupby("run_dir", sort=False)["status"].first().value_counts()
        counts = ", ".join(f"{s}={n}" for s, n in statuses.items())
        summary = f"{len(df)} rows from {df['run_dir'].nunique()} runs ({counts})"
        to_stdout = args.target is not None and args.output is None and not args.target_output
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.output, index=False)
            summary = f"wrote {args.output}: {summary}"
        elif not to_stdout:  # stdout holds one CSV: the per-run table when --target asks
            df.to_csv(sys.stdout, index=False)
        if args.target is not None:
            return _target_outputs(args, df, summary)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary, file=sys.stdout if args.output is not None else sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

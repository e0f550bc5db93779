"""Collect run directories (metrics.csv + config.yaml + summary.json) into one tidy CSV.

python scripts/collect.py runs/multirun/2024-01-01 runs/single -o results/all.csv
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

try:
    from trainrepro.analysis.curves import collect
    from trainrepro.errors import ConfigError
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.analysis.curves import collect
    from trainrepro.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs, parents (searched recursively), globs")
    parser.add_argument("-o", "--output", type=Path, help="CSV to write (default: stdout)")
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr)
    try:
        df = collect(args.runs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = df.groupby("run_dir", sort=False)["status"].first().value_counts()
    counts = ", ".join(f"{s}={n}" for s, n in statuses.items())
    summary = f"{len(df)} rows from {df['run_dir'].nunique()} runs ({counts})"
    if args.output is None:
        df.to_csv(sys.stdout, index=False)
        print(summary, file=sys.stderr)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.output, index=False)
        print(f"wrote {args.output}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

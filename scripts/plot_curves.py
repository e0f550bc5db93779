"""Plot learning curves of collected runs, one line per config group (mean over seeds).

    python scripts/plot_curves.py runs/multirun/2024-01-01 --x updates \\
        --group-by optimizer.name --metrics test_acc,train_loss --out results/x/curves
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

try:
    from trainrepro.analysis.curves import BANDS, DEFAULT_METRICS, collect, plot_curves
    from trainrepro.errors import ConfigError
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.analysis.curves import BANDS, DEFAULT_METRICS, collect, plot_curves
    from trainrepro.errors import ConfigError


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs, parents (searched recursively), globs")
    parser.add_argument(
        "--x", default="epoch", help="epoch|updates|samples|grad_evals|wall_seconds"
    )
    parser.add_argument(
        "--group-by",
        type=_csv_list,
        default=[],
        help="comma-separated columns (e.g. optimizer.name,optimizer.lr; run_dir = one line per "
        "run); default: the config keys that differ between runs, seeds excluded",
    )
    parser.add_argument(
        "--metrics", type=_csv_list, default=list(DEFAULT_METRICS), help="comma-separated"
    )
    parser.add_argument("--out", required=True, type=Path, help="output path; writes .png and .pdf")
    parser.add_argument("--title")
    parser.add_argument("--logx", action="store_true", help="log-scale x axis")
    parser.add_argument("--band", choices=list(BANDS), default="minmax", help="spread shading")
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr)
    try:
        df = collect(args.runs)
        paths = plot_curves(
            df,
            x=args.x,
            metrics=args.metrics,
            group_by=args.group_by,
            out=args.out,
            title=args.title,
            logx=args.logx,
            band=args.band,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{df['run_dir'].nunique()} runs -> " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

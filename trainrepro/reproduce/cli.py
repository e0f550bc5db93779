"""``trainrepro reproduce <paper> --profile quick|medium|full``: run a paper's runs
restartably, then write its report (results/<paper>[-quick]/REPORT.md) and the results index.

    trainrepro reproduce smith18 --profile quick --dry-run     # what would run, and its state
    trainrepro reproduce radam --profile quick                  # run (or resume), then report
    trainrepro reproduce radam --profile quick --report-only    # report from what is there
    trainrepro reproduce radam --profile quick --status         # each run's state, and an ETA
    trainrepro reproduce largebatch --profile quick precision=fp32   # + overrides for every run

Overrides after the paper are added to every run (after the profile's and the run's own), for
a machine that needs them (no bf16 units, say); they are recorded in each run's config and in
the report's command, and a resumed run with different ones is refused by its config check.

The report reads the run directories (runs/<paper>[-quick]/) when they are there, else the
committed results/<paper>[-quick]/runs.csv; ``--from-csv`` forces a CSV.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trainrepro.engine import placement as placing
from trainrepro.engine.runner import RunSpec, dry_run_lines, run_all
from trainrepro.errors import ConfigError
from trainrepro.reproduce.data import RUNS_CSV, results
from trainrepro.reproduce.estimate import estimate_line
from trainrepro.reproduce.paper import Paper, Profile
from trainrepro.reproduce.preflight import preflight_errors
from trainrepro.reproduce.progress import Progress
from trainrepro.reproduce.status import status_report

PROFILES = ("quick", "medium", "full")


def run_specs(
    paper: Paper, profile: Profile, run_root: Path, extra: Sequence[str] = ()
) -> list[RunSpec]:
    """The runner's ``(run dir, overrides)`` for every run of the profile, plus ``extra``."""
    return [
        (
            run_root / run.path,
            [
                f"+experiment={paper.name}/{run.preset}",
                *profile.config,
                *run.overrides,
                *extra,
                f"seed={run.seed}",
            ],
        )  # fmt: skip
        for run in profile.runs
    ]


def _has_runs(root: Path) -> bool:
    return root.is_dir() and any(root.rglob("metrics.csv"))


def parser() -> argparse.ArgumentParser:
    from trainrepro.reproduce.papers import PAPERS

    p = argparse.ArgumentParser(
        prog="trainrepro reproduce", description=__doc__.split("\n\n")[0].replace("``", "`")
    )
    p.add_argument("paper", choices=sorted(PAPERS), help="a declared paper")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="full",
        help="quick: 2 CPU cores; medium: minutes on one GPU; full: the paper's",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and their state; run nothing"
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="each run's state and the ETA, read from the run directories (of a reproduce "
        "running elsewhere too); writes and starts nothing",
    )
    placing.add_arguments(p, jobs_help="runs at a time (default: the profile's)")
    p.add_argument("--report-only", action="store_true", help="run nothing; write the report")
    p.add_argument("--from-csv", type=Path, help="build the report from this runs.csv")
    p.add_argument("--runs-root", type=Path, help="default: runs/<paper>[-quick]")
    p.add_argument("--out", type=Path, help="default: results/<paper>[-quick]")
    p.add_argument(
        "--allow-other-code",
        action="store_true",
        help="resume interrupted runs even when they started under other code",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides added to every run"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from trainrepro.reproduce import report
    from trainrepro.reproduce.papers import PAPERS

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o or o.startswith(("seed=", "+experiment="))]
    if bad:
        print(
            f"error: override={bad[0]}: give KEY=VALUE for a key other than seed and "
            "+experiment (each run sets its own)",
            file=sys.stderr,
        )
        return 2
    paper = PAPERS[args.paper]
    if args.profile not in paper.profiles:
        print(f"error: --profile={args.profile}: {args.paper} declares no such profile yet; "
              f"declared: {', '.join(paper.profiles)}", file=sys.stderr)  # fmt: skip
        return 2
    profile = paper.profiles[args.profile]
    name = paper.result_name(args.profile)
    run_root = args.runs_root or Path("runs") / name
    out = args.out or Path("results") / name
    try:
        where = placing.plan(
            args.jobs, args.threads, args.gpus, args.jobs_per_gpu,
            default_jobs=profile.jobs, default_threads=profile.threads,
        )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    specs = run_specs(paper, profile, run_root, args.overrides)
    if args.status:
        print(status_report(specs, run_root, where.jobs, f"{args.paper} --profile {args.profile}"))
        return 0
    epochs: dict[Path, int] = {}
    # Missing data or an unusable key is said once, before any run starts (a dry run says it
    # on stderr).
    problems = [] if args.report_only or args.from_csv else preflight_errors(specs, epochs)
    for message in problems:
        print(
            f"{'warning' if args.dry_run else 'error'}: {args.paper} --profile {args.profile}: "
            f"{message}{'' if args.dry_run else '; no run started'}",
            file=sys.stderr,
        )
    if args.dry_run:
        print("\n".join(dry_run_lines(specs)))
        print(f"{len(specs)} runs, {where.describe()}; then the report in {out}/REPORT.md")
        print(estimate_line(specs, run_root, out / RUNS_CSV, where.jobs))
        return 0
    if problems:
        return 2
    run_seconds = None
    if not (args.report_only or args.from_csv):
        start = time.monotonic()
        print(f"{len(specs)} runs, {where.describe()}" + (f"; {where.note}" if where.note else ""))
        print(estimate_line(specs, run_root, out / RUNS_CSV, where.jobs), flush=True)
        with Progress(specs, where.jobs, epochs) as progress:
            failed = run_all(specs, where, args.allow_other_code, watch=progress)
        if failed:
            print("error: runs failed (see their .log); no report written", file=sys.stderr)
            return 1
        run_seconds = time.monotonic() - start
    csv, note = args.from_csv, ""
    missing = [str(d) for d, _ in specs if not (d / "metrics.csv").is_file()]
    if csv is None and missing and (out / RUNS_CSV).is_file():
        # Partial run dirs (a rerun of a few runs, say) would make a report of a few runs:
        # the committed CSV holds them all. Said in the report, never silently.
        csv = out / RUNS_CSV
        note = (
            f"Built from `{csv}`: {len(missing)} of the {len(specs)} declared runs have no run "
            f"directory in `{run_root}`"
            + (
                f" (the {len(specs) - len(missing)} there were not read)."
                if _has_runs(run_root)
                else "."
            )
        )
        print(note.replace("`", ""))
    elif csv is None and not _has_runs(run_root):
        print(f"error: neither run directories in {run_root} nor {out / RUNS_CSV}", file=sys.stderr)
        return 2
    command = shlex.join(["trainrepro", "reproduce", *argv])
    try:
        res = results(paper, args.profile, out, None if csv else run_root, csv)
        res.notes += [note] if note else []
        path = report.write(res, command, run_seconds)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

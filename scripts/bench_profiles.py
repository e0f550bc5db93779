"""Which precision each quick profile should train in: fp32 against bf16 + channels_last on the
runs that dominate each profile's time, through the real trainer.

    python scripts/bench_profiles.py --data ../shared/data [--cases gn_ws_b2,radam_b32]

Each case is one ``python -m trainrepro.bench --sections accuracy`` call: the case's overrides
(a paper preset in its quick profile at the batch size that profile runs), 2 epochs of a
1,000-image subset, one thread, fp32 then bf16 + channels_last. Its JSON goes to
``results/bench/profiles/<case>.json``; the table printed at the end compares the median epoch's
training seconds (evaluation excluded). About 6 min on this project's 2-core CPU when idle.
A 1,000-image epoch at batch 512 is a single update, so that case's ratio is the roughest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from trainrepro.bench import __main__ as bench
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.bench import __main__ as bench

# Case -> overrides. Quick profiles whose schedules step within 2 epochs get one milestone at 1.
CASES: dict[str, tuple[str, ...]] = {
    "gn_ws_b2": ("+experiment=gn/gn_ws", "profile=gn_quick", "batch_size=2"),
    "gn_bn_b64": ("+experiment=gn/bn", "profile=gn_quick", "batch_size=64"),
    "bgn_b2": ("+experiment=bn4things/bgn_small", "profile=bn4things_quick"),
    "bn4_base": ("+experiment=bn4things/baseline", "profile=bn4things_quick"),
    "nf_agc_b512": ("+experiment=nfnet/nf_resnet_agc", "profile=nfnet_quick", "batch_size=512"),
    "nf_bn_b128": ("+experiment=nfnet/bn_resnet", "profile=nfnet_quick", "batch_size=128"),
    "radam_b32": ("+experiment=radam/radam", "optimizer.lr=0.01", "profile=radam_quick"),
}
STEPPED = {"gn", "bn4things", "radam"}  # their quick profiles' lr milestones lie past epoch 2
COMMON = ("epochs=2", "progress=false")
VARIANTS = ("fp32", "bf16+cl")


def case_overrides(case: str) -> list[str]:
    """Every override of ``case``'s runs (the dataset comes from ``--data``)."""
    overrides = [*CASES[case], *COMMON]
    paper = CASES[case][0].split("=", 1)[1].split("/", 1)[0]
    if paper in STEPPED:
        overrides.append("schedule.milestones=[1]")
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the folder holding cifar10/")
    parser.add_argument("--cases", default=",".join(CASES), help=", ".join(CASES))
    parser.add_argument("--out-dir", type=Path, default=Path("results/bench/profiles"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-profiles"))
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; valid: {', '.join(CASES)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        out = args.out_dir / f"{case}.json"
        result = bench.main(
            [
                "--sections=accuracy",
                "--threads=1",
                f"--data={args.data}",
                "--train-size=1000",
                f"--accuracy-variants={','.join(VARIANTS)}",
                f"--accuracy-overrides={' '.join(case_overrides(case))}",
                f"--accuracy-dir={args.runs_dir / case}",
                f"--out={out}",
            ]
        )
        by_variant = {r["variant"]: r for r in result["accuracy"]}
        base, fast = (by_variant[v] for v in VARIANTS)
        rows.append(
            {
                "case": case,
                "fp32_s_per_epoch": base["epoch_train_seconds"],
                "bf16_cl_s_per_epoch": fast["epoch_train_seconds"],
                "speedup": base["epoch_train_seconds"] / fast["epoch_train_seconds"],
                "fp32_acc": base["final_test_acc"],
                "bf16_cl_acc": fast["final_test_acc"],
            }
        )
    header = ("case", "fp32 s/ep", "bf16+cl", "speed-up", "acc fp32", "bf16+cl")
    print("\n{:<13} {:>9} {:>8} {:>9} {:>9} {:>8}".format(*header))
    for r in rows:
        print(
            f"{r['case']:<13} {r['fp32_s_per_epoch']:>9.2f} {r['bf16_cl_s_per_epoch']:>8.2f} "
            f"{r['speedup']:>8.2f}x {r['fp32_acc']:>9.2f} {r['bf16_cl_acc']:>8.2f}"
        )
    summary = args.out_dir / "summary.json"
    summary.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

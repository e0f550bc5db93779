"""``make bench``: how fast training runs, measured as ratios within one run.

Three sections, each selectable with ``--sections``:

- variants: a full update (forward, backward, SGD step) of each model under fp32,
  channels_last, bf16 autocast, both, and torch.compile (``--variants``): images/s, speed-up
  over fp32 (median of per-round ratios, the variants interleaved), TFLOP/s and MFU achieved
  and compile time (trainrepro.bench.speed);
- trainer: the trainer's update path against a bare PyTorch loop on the same model and
  batches (trainrepro.bench.speed.bench_trainer; the target is ≥ 0.97, marked when missed);
- pipeline: this project's on-device data path against torchvision transforms in DataLoader
  workers (trainrepro.bench.pipeline);
- with ``--concurrent N``: N processes updating each model at once against one alone, the
  aggregate images/s and its ratio (trainrepro.bench.concurrent).

Every row with images/s also has TFLOP/s (FLOPs per image counted by FlopCounterMode,
trainrepro.bench.flops) and MFU: that over the dense matmul peak of its precision measured
at the start of the same run (trainrepro.bench.peak), and over the bf16 peak.

Ratios, not absolute numbers, are what carry between machines, and between moments on a
machine shared with other jobs: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from trainrepro.bench.accuracy import DEFAULT_OVERRIDES, bench_accuracy, print_accuracy
from trainrepro.bench.concurrent import bench_concurrent, print_concurrent
from trainrepro.bench.flops import percent
from trainrepro.bench.peak import DEFAULT_SIZE, measure_peaks, peak_precision
from trainrepro.bench.pipeline import bench_pipeline
from trainrepro.bench.speed import (
    DEFAULT_VARIANTS,
    MODELS,
    TRAINER_TARGET,
    VARIANTS,
    bench_trainer,
    bench_variants,
)
from trainrepro.data.splits import DataSplits

SECTIONS = ("variants", "trainer", "pipeline", "accuracy")
DEFAULT_SECTIONS = ("variants", "trainer", "pipeline")  # accuracy: minutes per run, on request
DEFAULT_MODELS = ("wrn16-4", "resnet20", "lenet5")
DEFAULT_PIPELINE_MODELS = ("lenet5", "resnet20")


def load_data(root: str | None, train_size: int = 10000) -> tuple[DataSplits, list[str]]:
    """Real CIFAR-10 training images when ``root`` holds them, else synthetic ones; returns
    the data and the dataset overrides that give the same data to a composed config."""
    from trainrepro.data.builders import cifar10, synthetic
    from trainrepro.errors import ConfigError

    if root:
        try:
            data = cifar10(root=root, train_size=train_size)
            return data, [
                "dataset=cifar10",
                f"dataset.root={root}",
                f"dataset.train_size={train_size}",
            ]
        except ConfigError as e:
            print(f"note: {e}")
    print("note: no CIFAR-10 found (set TRAINREPRO_DATA); benchmarking on synthetic images")
    data = synthetic(num_train=train_size, num_test=1000)
    return data, ["dataset=synthetic", f"dataset.num_train={train_size}", "dataset.num_test=1000"]


def _csv(value: str, valid, what: str, parser: argparse.ArgumentParser) -> list[str]:
    items = [v for v in value.split(",") if v]
    unknown = [v for v in items if v not in valid]
    if unknown:
        parser.error(f"--{what}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
    return items


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def print_peaks(peaks: dict[str, float], size: int) -> None:
    measured = ", ".join(f"{p} {t:.3g}" for p, t in peaks.items()) or "none"
    print(f"dense matmul peak ({size}^3, random), TFLOP/s: {measured}")


def print_variants(rows: list[dict]) -> None:
    print(
        f"\n{'model':<13} {'variant':<16} {'images/s':>9} {'x fp32':>7} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'of':<4} {'MFU bf16':>8} {'compile s':>9}   (median over interleaved windows)"
    )
    last = None
    for r in rows:
        model = r["model"] if r["model"] != last else ""
        last = r["model"]
        compile_s = f"{r['compile_s']:.0f}" if r["compile_s"] is not None else ""
        print(
            f"{model:<13} {r['variant']:<16} {r['images_per_s']:>9.1f} "
            f"{r['speedup_vs_fp32']:>6.2f}x {r['tflop_per_s']:>8.3g} {percent(r['mfu']):>6} "
            f"{r['peak_precision']:<4} {percent(r['mfu_bf16']):>8} {compile_s:>9}"
        )
    per_model = {r["model"]: r["gflop_per_step"] for r in rows}
    print(
        "GFLOP per update (matmuls and convolutions, forward + backward, FlopCounterMode): "
        + ", ".join(f"{m} {g:.2f}" for m, g in per_model.items())
    )


def print_trainer(rows: list[dict]) -> None:
    print(
        f"\n{'model':<13} {'trainer':>9} {'bare loop':>10} {'ratio':>7} {'':<6} {'MFU':>6} "
        f"{'bare MFU':>8} {'of':<4}   (images/s, fp32; * below {TRAINER_TARGET})"
    )
    for r in rows:
        mark = "" if r["meets_target"] else f"*<{TRAINER_TARGET}"
        print(
            f"{r['model']:<13} {r['trainer_images_per_s']:>9.1f} {r['bare_images_per_s']:>10.1f} "
            f"{r['trainer_vs_bare']:>7.3f} {mark:<6} {percent(r['trainer_mfu']):>6} "
            f"{percent(r['bare_mfu']):>8} {r['peak_precision']:<4}"
        )


def print_pipeline(rows: list[dict]) -> None:
    print(
        f"\n{'model':<13} {'device path':>12} {'DataLoader':>11} {'ratio':>7} {'MFU':>6} "
        f"{'DL MFU':>6} {'of':<4}   (images/s, fp32)"
    )
    for r in rows:
        print(
            f"{r['model']:<13} {r['device_images_per_s']:>12.1f} "
            f"{r['dataloader_images_per_s']:>11.1f} {r['ratio']:>6.2f}x "
            f"{percent(r['device_mfu']):>6} {percent(r['dataloader_mfu']):>6} "
            f"{r['peak_precision']:<4}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m trainrepro.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help=", ".join(SECTIONS))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=", ".join(MODELS))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument(
        "--pipeline-models", default=",".join(DEFAULT_PIPELINE_MODELS), help=", ".join(MODELS)
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="updates per window (default: as many as fill --window-seconds; pipeline: 10)",
    )
    parser.add_argument("--window-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--data", default=os.environ.get("TRAINREPRO_DATA"))
    parser.add_argument(
        "--accuracy-variants",
        default="fp32,bf16+cl",
        help="the accuracy section's runs, in order (the first is the reference)",
    )
    parser.add_argument(
        "--accuracy-overrides",
        default=" ".join(DEFAULT_OVERRIDES),
        help="config overrides of the accuracy runs (the dataset comes from --data)",
    )
    parser.add_argument(
        "--accuracy-dir", type=Path, help="run dirs (default runs/bench-accuracy/<now>)"
    )
    parser.add_argument(
        "--peak-size",
        type=int,
        default=None,
        help="matmul size of the measured peak that MFU divides by (default: "
        + ", ".join(f"{d} {n}" for d, n in DEFAULT_SIZE.items())
        + "; 0: no peak, no MFU)",
    )
    parser.add_argument(
        "--concurrent",
        default="",
        metavar="N[,N...]",
        help="also time N processes updating each of --models at once against one alone, "
        "for each N (e.g. 1,2,4,8)",
    )
    parser.add_argument("--concurrent-variant", default="fp32", choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    sections = _csv(args.sections, SECTIONS, "sections", parser)
    models = _csv(args.models, MODELS, "models", parser)
    concurrent = _counts(args.concurrent, parser)
    variants = _csv(args.variants, VARIANTS, "variants", parser)
    pipeline_models = _csv(args.pipeline_models, MODELS, "pipeline-models", parser)
    accuracy_variants = _csv(args.accuracy_variants, VARIANTS, "accuracy-variants", parser)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)

    data, dataset_overrides = load_data(args.data, args.train_size)
    meta = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "data": data.name,
        "batch_size": args.batch_size,
        "windows": args.windows,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": os.getloadavg(),
    }
    print(
        f"data: {data.name}, {len(data.train.labels)} train images; device: {device}; "
        f"batch {args.batch_size}; {args.windows} windows; torch threads: "
        f"{torch.get_num_threads()}; load average {_load()} on {os.cpu_count()} cores"
    )
    peaks: dict[str, float] = {}
    peak_size = DEFAULT_SIZE[device.type] if args.peak_size is None else args.peak_size
    if peak_size > 0 and {"variants", "trainer", "pipeline"} & set(sections):
        # The precisions the rows divide by, and bf16's: the issue's common denominator.
        wanted = [peak_precision(VARIANTS[v].precision, device) for v in ["fp32", *variants]]
        peaks = measure_peaks(device, [*wanted, "bf16"], peak_size)
        print_peaks(peaks, peak_size)
    meta["peak_size"] = peak_size
    meta["peak_tflop_per_s"] = peaks
    meta["trainer_target"] = TRAINER_TARGET
    timing = dict(
        device=device,
        batch_size=args.batch_size,
        windows=args.windows,
        steps=args.steps,
        window_seconds=args.window_seconds,
        peaks=peaks,
    )
    started = time.perf_counter()
    results: dict[str, list[dict]] = {}
    if "variants" in sections:
        rows = []
        for name in models:
            rows += bench_variants(name, data, variants, **timing)
        results["variants"] = rows
        print_variants(rows)
    if "trainer" in sections:
        results["trainer"] = [bench_trainer(m, dataset_overrides, **timing) for m in models]
        print_trainer(results["trainer"])
    if "pipeline" in sections:
        results["pipeline"] = [
            bench_pipeline(
                m,
                data,
                device=device,
                batch_size=args.batch_size,
                windows=args.windows,
                steps=args.steps or 10,
                workers=args.workers,
                peaks=peaks,
            )
            for m in pipeline_models
        ]
        print_pipeline(results["pipeline"])
    if "accuracy" in sections:
        overrides = [*args.accuracy_overrides.split(), *dataset_overrides]
        results["accuracy"] = bench_accuracy(overrides, accuracy_variants, args.accuracy_dir)
        print_accuracy(results["accuracy"])
    if concurrent:
        results["concurrent"] = bench_concurrent(
            concurrent, models, args.concurrent_variant, data, timing
        )
        print_concurrent(results["concurrent"])
    meta["load_average_after"] = os.getloadavg()
    meta["seconds"] = time.perf_counter() - started
    print(f"\n{meta['seconds']:.0f} s; load average now {_load()}")
    out = {"meta": meta, **results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _counts(text: str, parser: argparse.ArgumentParser) -> list[int]:
    """``"2,4,8"`` -> [2, 4, 8]; empty: none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(item.isdigit() and int(item) >= 1 for item in items):
        parser.error(f"--concurrent={text}: give process counts >= 1, e.g. 2,4,8")
    return [int(item) for item in items]


if __name__ == "__main__":
    main()

"""What a speed variant costs in accuracy: the same short run, once per variant, one after the
other, through the real trainer (``python -m trainrepro.bench --sections accuracy``).

Each run is ``trainrepro.engine.train.train`` on the composed config plus the variant's keys
(precision, channels_last, compile), in its own run directory; the report is the final and
best test accuracy, the final training loss, and the training seconds (evaluation excluded; in
all, and of the median epoch, which the time ratio compares).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from trainrepro.bench.speed import VARIANTS, compose_config

# ResNet-20 (He et al.'s CIFAR net) on a 10,000-image CIFAR-10 subset, cosine schedule:
# a few minutes per run on 2 CPU cores.
DEFAULT_OVERRIDES = (
    "model=resnet_cifar",
    "model.depth=20",
    "normalization=bn",
    "optimizer=sgd",
    "schedule=cosine",
    "epochs=8",
    "batch_size=128",
    "eval_batch_size=500",
    "device=cpu",
    "progress=false",
)


def bench_accuracy(
    overrides: list[str], variants: list[str], out_dir: Path | None = None
) -> list[dict]:
    from trainrepro.engine.train import train

    out_dir = out_dir or Path("runs/bench-accuracy") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for name in variants:
        cfg = compose_config([*overrides, *VARIANTS[name].overrides()])
        run_dir = out_dir / name
        print(f"accuracy run {name}: {run_dir}", flush=True)
        summary = train(cfg, run_dir)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        rows.append(
            {
                "variant": name,
                "run_dir": str(run_dir),
                "status": summary["status"],
                "epochs": int(metrics["epoch"].iloc[-1]),
                "final_test_acc": float(metrics["test_acc"].iloc[-1]),
                "best_test_acc": float(metrics["test_acc"].max()),
                "final_train_loss": float(metrics["train_loss"].iloc[-1]),
                "test_acc_per_epoch": [float(a) for a in metrics["test_acc"]],
                "train_seconds": float(metrics["train_seconds"].sum()),
                # The median epoch: robust to one epoch slowed by another job's burst.
                "epoch_train_seconds": float(metrics["train_seconds"].median()),
            }
        )
    base = rows[0]["epoch_train_seconds"]
    for row in rows:
        row["train_time_vs_first"] = row["epoch_train_seconds"] / base
    return rows


def print_accuracy(rows: list[dict]) -> None:
    print(
        f"\n{'variant':<16} {'final acc':>9} {'best acc':>9} {'train loss':>10} "
        f"{'train s':>8} {'s/epoch':>8} {'time':>6}  (test acc %; median epoch vs first)"
    )
    for r in rows:
        print(
            f"{r['variant']:<16} {r['final_test_acc']:>9.2f} {r['best_test_acc']:>9.2f} "
            f"{r['final_train_loss']:>10.4f} {r['train_seconds']:>8.0f} "
            f"{r['epoch_train_seconds']:>8.1f} "
            f"{r['train_time_vs_first']:>5.2f}x"
        )
    for r in rows:
        print(
            f"{r['variant']:<16} per epoch: "
            + " ".join(f"{a:.1f}" for a in r["test_acc_per_epoch"])
        )

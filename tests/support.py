"""Shared helpers for tests that compose configs and train tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"
SHARED_DATA = Path(os.environ.get("TRAINREPRO_DATA", REPO.parent / "shared" / "data"))

# A run small enough for a few seconds on 2 CPU cores, on the built-in synthetic data.
TINY_DATA = ("dataset=synthetic", "dataset.num_train=512", "dataset.num_test=256")
TINY_MODEL = ("model=wrn", "model.depth=10", "model.width=1")
TINY_RUN = (
    "schedule=constant",
    "epochs=2",
    "batch_size=64",
    "eval_batch_size=256",
    "device=cpu",
    "progress=false",
)
TINY = (*TINY_DATA, *TINY_MODEL, *TINY_RUN)
# Options whose defaults are paper-sized get shrunk so a few CPU steps take seconds.
SMALL = {
    ("model", "wrn"): ("model.depth=10", "model.width=1"),
    ("model", "resnet"): ("model.width=8",),
    ("model", "mobilenetv2"): ("model.width_mult=0.25",),
    ("model", "nf_resnet"): ("model.depth=8", "normalization=none"),  # normalizer-free
    ("normalization", "gn"): ("normalization.groups=4",),
    ("normalization", "ghost_bn"): ("normalization.ghost_batch_size=8",),
    ("schedule", "step"): ("schedule.milestones=[0.5]",),
    ("schedule", "sgdr"): ("schedule.period=0.5",),
    ("schedule", "cyclic"): ("schedule.half_period=0.25",),
    # A constant schedule has no cycles: snapshots at listed epochs instead.
    ("callbacks", "snapshots"): (
        "callbacks.snapshots.at=epochs",
        "callbacks.snapshots.epochs=[1,2]",
    ),
}
TIMING_COLUMNS = ("epoch_seconds", "train_seconds", "wall_seconds")


def make_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_cfg(*overrides: str) -> DictConfig:
    return make_cfg(*TINY, *overrides)


def options(group: str) -> list[str]:
    root = CONF_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m trainrepro`` in ``cwd`` (with ``env`` instead of ours when given)."""
    return subprocess.run(
        [sys.executable, "-m", "trainrepro", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def tiny_model() -> nn.Module:
    """A conv + BN + linear net for 1x4x4 inputs and 3 classes, the same weights every call."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def metrics_without_timings(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "metrics.csv")
    return df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns])


def write_fake_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    """A tiny ``cifar-100-python`` folder in the real pickle format, random pixels."""
    import pickle

    import numpy as np

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [i % 100 for i in range(n)],
            b"coarse_labels": [i % 20 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return root


def write_image_tree(root: Path, classes: int = 3, per_class: int = 12, size: int = 20) -> Path:
    """A class-per-folder tree of JPEGs with ``train/`` and ``test/``, one colour per class."""
    from PIL import Image

    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = (80 * c % 256, 40 + 7 * i, 200 - 60 * c)
                Image.new("RGB", (size, size), colour).save(folder / f"{i:03d}.jpg")
    return root

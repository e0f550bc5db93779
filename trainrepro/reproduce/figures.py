"""Figures that several papers' reports draw the same way."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save


def loss_and_accuracy(
    runs: pd.DataFrame, labels: Mapping[str, str], title: str, prefix: Path
) -> list[Path] | None:
    """Training loss (log) and test accuracy per epoch, one line per preset of ``labels`` found
    in ``runs`` (mean over its runs, i.e. over seeds), in the order of ``labels``."""
    if runs.empty:
        return None
    fig = MplFigure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, preset in enumerate(p for p in labels if p in set(runs["preset"])):
        of_preset = runs[runs["preset"] == preset]
        for ax, metric in zip(axes, ("train_loss", "test_acc"), strict=True):
            curve = of_preset.groupby("epoch")[metric].mean()
            ax.plot(curve.index, curve.values, color=f"C{i}", label=labels[preset])
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    return save(fig, prefix, tight=True)


def signal_propagation(df: pd.DataFrame, prefix: Path) -> list[Path]:
    """Fig. 1's two panels (log scale): average squared channel mean and channel variance."""
    fig = MplFigure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, (label, sub) in enumerate(df.groupby("variant", sort=False)):
        for ax, col in zip(axes, ("avg_sq_mean", "avg_var"), strict=True):
            ax.plot(sub["block"], sub[col], marker=".", color=f"C{i}", label=label)
    axes[0].set(ylabel="average squared channel mean", yscale="log", xlabel="residual block")
    axes[1].set(ylabel="average channel variance", yscale="log", xlabel="residual block")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    depth = int(df["depth"].iloc[0]) if "depth" in df else None
    batch = int(df["batch"].iloc[0]) if "batch" in df else None
    fig.suptitle(
        f"Signal propagation at initialization (Brock et al. 2021a, Fig. 1), CIFAR ResNet-{depth}, "
        f"N(0,1) batch of {batch}"
    )
    return save(fig, prefix)

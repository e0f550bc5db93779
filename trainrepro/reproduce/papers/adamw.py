"""Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019), Figure 2: final
test error over initial lr x weight decay for Adam with L2, AdamW, SGD with L2 and SGDW on
CIFAR-10, cosine schedule: with decoupling the best decay no longer moves with the lr.

Runs: conf/experiment/adamw/<preset>.yaml over its 3 x 3 grid (adamw_claims.GRID), in
runs/adamw[-quick]/<preset>/lr<lr>/wd<wd>/seed<k>; wd is the L2 factor for Adam and SGD, the
normalized decay lambda_norm for AdamW and SGDW. Claims: adamw_claims.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Paper, Profile, Results, Run, fmt
from trainrepro.reproduce.papers.adamw_claims import CLAIMS, GRID, LABELS, finals

SEEDS = range(3)


def _runs(seed: int) -> tuple[Run, ...]:
    return tuple(
        Run(f"{preset}/lr{lr:g}/wd{wd:g}/seed{seed}", preset, seed,
            (f"optimizer.lr={lr:g}", f"{key}={wd:g}"))
        for preset, (lrs, wds, key) in GRID.items() for lr in lrs for wd in wds
    )  # fmt: skip


# Seed by seed, so that a profile stopped early leaves whole grids to compare.
RUNS = tuple(run for s in SEEDS for run in _runs(s))
PROFILES = {
    "full": Profile("full", RUNS, note="GPU, 108 runs: ResNet-26 (CIFAR, 4 blocks a stage), "
                    "100 epochs, batch 128, the 4 optimizers over their 3 x 3 grids at 3 seeds; "
                    "estimated ~8 GPU-hours (conf/experiment/adamw/_base.yaml)"),
    "quick": Profile(
        "quick", RUNS, config=("profile=adamw_quick",), jobs=2, threads=1,
        note="2 CPU cores, bf16, 37 min wall (measured: conf/profile/adamw_quick.yaml): "
        "ResNet-8 on 10,000 CIFAR-10 "
        "images, 5 epochs, batch 32; the 4 optimizers over their 3 x 3 grids at 3 seeds",
    ),
    "medium": Profile(
        "medium", RUNS, config=("profile=adamw_medium",), jobs=8, threads=2,
        note="one GPU, 8 runs at a time, ~6.5 min (an estimate from issue 20's H200 "
        "measurement and an assumed ResNet-8 speed, not measured: 108 runs × 2 epochs × "
        "50,000 = 10,800,000 training images at 47.3k img/s, conf/profile/adamw_medium.yaml): "
        "ResNet-8 on all 50,000 images, fp32, 2 epochs; the quick profile's runs and seeds",
    ),
}  # fmt: skip

SETTING = (
    "Figure 2 trains a 26 2x64d Shake-Shake ResNet on CIFAR-10 for 100 epochs at batch 128 "
    "with a cosine schedule (papers.md sec. 9), over a grid of initial lr x weight decay: the L2 "
    "factor for Adam and SGD (momentum 0.9), the normalized decay lambda_norm (lambda = "
    "lambda_norm sqrt(b / (B T)), applied as eta_t lambda per update, the official code's "
    "train.lua) for AdamW and SGDW. How many runs stand behind each cell is not known here. "
    "The full profile keeps all of that but the model: a CIFAR ResNet-26 (the same depth and 4 "
    "blocks a stage, one branch of 16/32/64 channels, no shake-shake). Our grid is 3 x 3 per "
    "optimizer, factor 4 apart, around the README's defaults (AdamW lr 0.001, SGDW lr 0.05, "
    "lambda_norm 0.025; L2 factors around 1e-3), at 3 seeds. The quick profile: ResNet-8 (78k "
    "parameters) on a stratified 10,000 training images (all 10,000 test images), 5 epochs, "
    "batch 32, bf16 on 2 CPU cores. The medium profile: ResNet-8 on all 50,000 images for 2 "
    "epochs at batch 128 on one GPU. At these scales weight decay has only a few thousand "
    "updates to act, so the basins are shallow."
)


def prepare(res: Results) -> None:
    """The grid's lr and wd (and the seed) from the run path."""
    parts = res.df["run_dir"].str.extract(r"/lr([^/]+)/wd([^/]+)/seed(\d+)$")
    res.df["grid_lr"] = parts[0].astype(float)
    res.df["grid_wd"] = parts[1].astype(float)
    res.df["seed"] = parts[2].astype(int)


def _cells(res: Results, preset: str) -> dict[tuple[float, float], list[float]]:
    f = finals(res)
    sub = f[f["preset"] == preset]
    out: dict[tuple[float, float], list[float]] = {}
    for lr, wd, acc in zip(sub["lr"], sub["wd"], sub["acc"], strict=True):
        out.setdefault((lr, wd), []).append(100.0 - acc)
    return out


def table(res: Results) -> str:
    lines = [
        f"# Loshchilov & Hutter 2019 (decoupled weight decay) ({res.name})",
        "",
        "Final test error (%), mean ± sd over seeds (diverged runs at chance, 90%); per "
        "optimizer, rows: weight decay (L2 factor for Adam and SGD, lambda_norm for AdamW and "
        "SGDW), columns: initial lr; **bold**: the best weight decay at each lr (by the mean).",
    ]
    for preset, (lrs, wds, key) in GRID.items():
        cells = _cells(res, preset)
        if not cells:
            continue
        means = {c: float(np.mean(v)) for c, v in cells.items()}
        best = {lr: min((w for w in wds if (lr, w) in means), key=lambda w: means[(lr, w)],
                        default=None) for lr in lrs}  # fmt: skip
        lines += ["", f"**{LABELS[preset]}** ({key.split('.')[1]})", "",
                  "| wd \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
                  "|---|" + "---|" * len(lrs)]  # fmt: skip
        for wd in wds:
            row = []
            for lr in lrs:
                v = cells.get((lr, wd))
                if not v:
                    row.append("—")
                    continue
                text = (
                    fmt(means[(lr, wd)])
                    + (f" ± {fmt(float(np.std(v, ddof=1)))}" if len(v) > 1 else "")
                    + f" (n={len(v)})"
                )
                row.append(f"**{text}**" if best[lr] == wd else text)
            lines.append(f"| {wd:g} | " + " | ".join(row) + " |")
    lines += [
        "",
        "The paper's Figure 2 prints no numbers that were at hand (papers.md sec. 9: "
        "NOT FOUND); [R]: AdamW's best error about 15% (relative) below Adam's with L2.",
    ]
    return "\n".join(lines) + "\n"


def plot_heatmaps(res: Results, prefix: Path) -> object:
    """Figure 2: four heat maps of the mean final test error over lr x weight decay."""
    shown = [p for p in ("sgd", "sgdw", "adam", "adamw") if _cells(res, p)]
    if not shown:
        return None
    fig = MplFigure(figsize=(9.5, 8), layout="constrained")
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    for ax, preset in zip(axes, ("sgd", "sgdw", "adam", "adamw"), strict=True):
        if preset not in shown:
            ax.set_axis_off()
            continue
        lrs, wds, key = GRID[preset]
        cells = _cells(res, preset)
        grid = np.array([[np.mean(cells[(lr, wd)]) if (lr, wd) in cells else math.nan
                          for lr in lrs] for wd in wds])  # fmt: skip
        image = ax.imshow(grid, origin="lower", cmap="viridis_r", aspect="auto")
        for i in range(len(wds)):
            for j in range(len(lrs)):
                if math.isfinite(grid[i, j]):  # dark text on the light (low-error) cells
                    light = grid[i, j] < np.nanmean(grid)
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=9,
                            color="k" if light else "w")  # fmt: skip
        for j in range(len(lrs)):  # the best wd at each lr
            col = grid[:, j]
            if np.isfinite(col).any():
                ax.scatter(j, int(np.nanargmin(col)), s=1400, marker="s", facecolors="none",
                           edgecolors="r", linewidths=2)  # fmt: skip
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(wds)), [f"{wd:g}" for wd in wds])
        ylabel = "L2 factor" if key.endswith("weight_decay") else "normalized weight decay"
        ax.set(title=LABELS[preset], xlabel="initial learning rate", ylabel=ylabel)
        fig.colorbar(image, ax=ax, label="test error (%)")
    fig.suptitle("Final test error over lr x weight decay (Loshchilov & Hutter 2019, Fig. 2); "
                 "mean over seeds, red: best decay per lr")  # fmt: skip
    return save(fig, prefix)


FIGURES = (
    Figure("heatmaps", "Figure 2: mean final test error over the initial learning rate x weight "
           "decay grid for SGD (L2), SGDW, Adam (L2) and AdamW; red squares mark the best "
           "weight decay at each learning rate", plot_heatmaps),
)  # fmt: skip

PAPER = Paper(
    name="adamw",
    title="Loshchilov & Hutter 2019 (AdamW)",
    citation='Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 '
    "(arXiv:1711.05101); CIFAR-10, Figure 2",
    profiles=PROFILES,
    numbers=(),
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/lr{lr:g}/wd{wd:g}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
)

"""The nfnet declaration's table and figures (Brock et al. 2021a/b at CIFAR-10 scale): one row
per run, summarized per cell (preset or AGC-threshold sweep point, batch, lr) over its seeds.

A run's folder under runs/nfnet[-quick]/ is its cell: a preset (``nf_resnet_agc``) or, for the
AGC threshold sweep, the preset with its threshold (``nf_resnet_agc_clip0.04``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.figures import loss_and_accuracy, signal_propagation
from trainrepro.reproduce.paper import Figure, Results, fmt

LABELS = {
    "bn_resnet": "BN-ResNet",
    "bn_resnet_agc": "BN-ResNet + AGC",
    "plain_resnet": "ResNet, no norm",
    "plain_resnet_agc": "ResNet, no norm + AGC",
    "nf_resnet": "NF-ResNet",
    "nf_resnet_agc": "NF-ResNet + AGC",
    "nf_resnet_clip": "NF-ResNet + global-norm clip",
}
CLIP_TAG = "_clip"  # nf_resnet_agc_clip0.04: the AGC preset at another threshold
DEFAULT_CLIP = 0.01  # conf/callbacks/agc.yaml (the paper's value at batch 4096)
CLIP_SWEEP = (0.04, 0.16)  # with the preset's 0.01: λ x1, x4, x16 at the small batch
LN10 = math.log(10.0)  # the loss of a uniform prediction over 10 classes
CHANCE = 10.0  # test accuracy (%) of a uniform guess: what a diverged run is worth


def cell_clip(cell: str) -> float:
    """The AGC threshold of a run folder: its sweep value, the preset default, or NaN."""
    if CLIP_TAG in cell:
        return float(cell.rsplit(CLIP_TAG, 1)[1])
    return DEFAULT_CLIP if cell.endswith("_agc") else math.nan


def label(cell: str) -> str:
    if CLIP_TAG in cell:
        base = cell.rsplit(CLIP_TAG, 1)[0]
        return f"{LABELS.get(base, base)}, λ {cell_clip(cell):g}"
    return LABELS.get(cell, cell)


def _order(cell: str) -> tuple[int, float]:
    base = cell.rsplit(CLIP_TAG, 1)[0]
    keys = list(LABELS)
    clip = cell_clip(cell)
    return (keys.index(base) if base in keys else len(keys), 0.0 if math.isnan(clip) else clip)


def stable(status: str, train_loss: float) -> bool:
    """Completed, and learned something: final training loss below the uniform guess's."""
    return status == "completed" and train_loss < LN10


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its cell, batch, lr, AGC threshold, seed and final numbers. A diverged
    run's accuracy is NaN (recorded, never averaged with the completed runs')."""
    rows = []
    for row in final.to_dict("records"):
        done = row["status"] == "completed"
        clip = row.get("callbacks.agc.clipping", math.nan)
        clip = float(clip) if pd.notna(clip) else cell_clip(row["preset"])
        rows.append(
            {
                "cell": row["preset"], "batch": int(row["grid_batch"]),
                "lr": float(row["grid_lr"]), "clip": clip,
                "seed": int(str(row["run_dir"]).rsplit("seed", 1)[1]),
                "status": row["status"],
                "stable": stable(row["status"], float(row["train_loss"])),
                "test_acc": float(row["test_acc"]) if done else math.nan,
                "train_loss": float(row["train_loss"]) if done else math.nan,
                "agc": float(row.get("agc_clipped_units", math.nan)),
            }
        )  # fmt: skip
    df = pd.DataFrame(rows, columns=["cell", "batch", "lr", "clip", "seed", "status", "stable",
                                     "test_acc", "train_loss", "agc"])  # fmt: skip
    return df.sort_values(
        ["batch", "cell", "lr", "seed"], key=lambda c: c.map(_order) if c.name == "cell" else c
    ).reset_index(drop=True)


def _mean_sd(xs: pd.Series, digits: int = 2) -> str:
    xs = xs.dropna()
    if xs.empty:
        return "—"
    if len(xs) == 1:
        return fmt(float(xs.iloc[0]), digits)
    return f"{xs.mean():.{digits}f} ± {xs.std():.{digits}f}"


def _declared(res: Results) -> dict[tuple[int, str, float], int]:
    """Seeds the profile declares per (batch, cell, lr)."""
    out: dict[tuple[int, str, float], int] = {}
    for run in res.paper.profiles[res.profile].runs:
        cell, b, lr, _ = run.path.split("/")
        key = (int(b.removeprefix("b")), cell, float(lr.removeprefix("lr")))
        out[key] = out.get(key, 0) + 1
    return out


def table(res: Results) -> str:
    s = summarize(res.final())
    declared = _declared(res)
    groups = {key: g for key, g in s.groupby(["batch", "cell", "lr"], sort=False)}
    keys = sorted({*groups, *declared}, key=lambda k: (k[0], _order(k[1]), k[2]))
    lines = [
        f"# Brock et al. 2021a/b on CIFAR-10 ({res.name})",
        "",
        "| batch | preset | AGC λ | lr | seeds run / declared | stable | final test acc. (%) "
        "| final train loss | AGC: units clipped, last epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for batch, cell, lr in keys:
        clip = cell_clip(cell)
        head = (f"| {batch} | {LABELS.get(cell.rsplit(CLIP_TAG, 1)[0], cell)} "
                f"| {'—' if math.isnan(clip) else f'{clip:g}'} | {lr:g} ")  # fmt: skip
        g = groups.get((batch, cell, lr))
        if g is None:
            lines.append(head + f"| 0/{declared[(batch, cell, lr)]} | — | not run | — | — |")
            continue
        agc = g["agc"].dropna()
        lines.append(
            head + f"| {len(g)}/{declared.get((batch, cell, lr), 0)} "
            f"| {int(g['stable'].sum())}/{len(g)} "
            f"| {_mean_sd(g['test_acc'])} | {_mean_sd(g['train_loss'], 3)} "
            f"| {f'{100 * agc.mean():.1f}%' if len(agc) else '—'} |"
        )
    lines += [
        "",
        "Per cell over its seeds: mean ± standard deviation of the completed runs (one number: one",
        "run); not run: declared by the profile, not in these runs. stable: completed and final",
        "training loss below ln 10 (the uniform guess);",
        "diverged: a non-finite loss (summary.json status), its accuracy not averaged in.",
        "The papers have no CIFAR numbers (ImageNet only); the comparison is between presets.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures
def plot_spp(res: Results, prefix: Path) -> object:
    """Fig. 1 at CIFAR scale, from the SPP rows of init seed 0 (no runs needed)."""
    spp = res.extras.get("spp")
    if spp is None or spp.empty:
        return None
    if "seed" in spp:
        spp = spp[spp["seed"] == spp["seed"].min()]
    return signal_propagation(spp, prefix)


def plot_stability(res: Results, prefix: Path) -> object:
    """Final training loss per lr of each batch's grid, every preset side by side (seeds as
    dots, their mean as a line); a diverged run is an x in the band above, with its count."""
    s = summarize(res.final())
    s = s[~s["cell"].str.contains(CLIP_TAG, regex=False)]
    if s.empty:
        return None
    batches = sorted(s["batch"].unique())
    widths = [max(2, s[s["batch"] == b]["lr"].nunique()) for b in batches]
    fig = MplFigure(figsize=(2.2 + 1.9 * sum(widths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False, width_ratios=widths)[0]
    cells = [c for c in LABELS if c in set(s["cell"])]
    done = s["train_loss"].dropna()
    top = max(LN10, float(done.max()) if len(done) else LN10) * 1.08
    band = top * 1.06  # y of the diverged markers, above every completed run
    for ax, batch in zip(axes, batches, strict=True):
        sub = s[s["batch"] == batch]
        lrs = sorted(sub["lr"].unique())
        for i, cell in enumerate(cells):
            runs = sub[sub["cell"] == cell]
            if runs.empty:
                continue
            color = f"C{list(LABELS).index(cell) % 10}"
            dx = (i - (len(cells) - 1) / 2) * 0.8 / max(len(cells), 1)
            xs = [lrs.index(lr) + dx for lr in runs["lr"]]
            ok = runs["train_loss"].notna().to_numpy()
            ax.scatter(np.array(xs)[ok], runs["train_loss"][ok], s=14, color=color, alpha=0.6)
            mean = runs[ok].groupby("lr")["train_loss"].mean()
            ax.plot([lrs.index(lr) + dx for lr in mean.index], mean.values, marker="o",
                    color=color, label=LABELS[cell])  # fmt: skip
            bad = runs[~ok].groupby("lr").size()
            for lr, n in bad.items():
                x = lrs.index(lr) + dx
                ax.scatter([x], [band], marker="x", s=70, linewidths=2, color=color)
                if n > 1 or len(runs[runs["lr"] == lr]) > 1:
                    ax.annotate(f"{n}/{len(runs[runs['lr'] == lr])}", (x, band), fontsize=7,
                                ha="center", va="bottom", xytext=(0, 5),
                                textcoords="offset points")  # fmt: skip
        ax.axhline(LN10, color="grey", ls="--", lw=0.8)
        ax.axhspan(top, band * 1.08, color="0.92", zorder=0)
        ax.text(-0.45, band * 1.045, "diverged", fontsize=8, va="top", color="0.3")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlim(-0.6, len(lrs) - 0.4)
        ax.set_ylim(top=band * 1.08)
        ax.set(xlabel="learning rate", title=f"batch {batch}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("final training loss (dashed: ln 10)")
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle("Stability over the lr grid (Brock et al. 2021b, Sec. 4.1): dots are seeds, "
                 "lines their mean, x a diverged run", fontsize=10)  # fmt: skip
    return save(fig, prefix, tight=True)


def plot_clipping(res: Results, prefix: Path) -> object:
    """At the small batch, lr 0.1: NF-ResNet + AGC's final test accuracy and clipped units
    against the threshold λ, beside NF-ResNet without AGC and BN-ResNet (means over seeds)."""
    s = summarize(res.final())
    small = s[(s["batch"] == s["batch"].min()) & (s["lr"] == 0.1)] if len(s) else s
    agc = small[small["cell"].str.startswith("nf_resnet_agc")]
    if agc.empty:
        return None
    fig = MplFigure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for cell, ref in (("nf_resnet", "-"), ("bn_resnet", ":")):
        accs = small[small["cell"] == cell]["test_acc"].dropna()
        if len(accs):
            left.axhline(accs.mean(), color=f"C{list(LABELS).index(cell)}", ls=ref,
                         label=f"{LABELS[cell]}, no AGC (mean of {len(accs)})")  # fmt: skip
    by = agc.groupby("clip")
    left.scatter(agc["clip"], agc["test_acc"], s=14, color="C5", alpha=0.6)
    left.plot(by["test_acc"].mean().index, by["test_acc"].mean().values, "o-", color="C5",
              label="NF-ResNet + AGC")  # fmt: skip
    right.scatter(agc["clip"], 100 * agc["agc"], s=14, color="C5", alpha=0.6)
    right.plot(by["agc"].mean().index, 100 * by["agc"].mean().values, "o-", color="C5")
    clips = sorted({DEFAULT_CLIP, *CLIP_SWEEP, *agc["clip"]})
    missing = [c for c in clips if not np.isclose(agc["clip"], c).any()]
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(clips, [f"{c:g}" for c in clips])
        ax.minorticks_off()
        ax.set_xlim(clips[0] / 1.6, clips[-1] * 1.6)
        ax.set_xlabel("AGC clipping threshold λ")
        ax.grid(alpha=0.3)
        for c in missing:
            ax.text(c, 0.04, "not run", transform=ax.get_xaxis_transform(), ha="center",
                    fontsize=8, color="0.4")  # fmt: skip
    left.set_ylabel("final test accuracy (%)")
    left.legend(fontsize=8, loc="best")
    right.set(ylabel="units clipped in the last epoch (%)", ylim=(0, 100))
    fig.suptitle(f"AGC's threshold at batch {int(small['batch'].iloc[0])}, lr 0.1 (Brock et al. "
                 "2021b, Fig. 2; 0.01 is the paper's value at batch 4096)")  # fmt: skip
    return save(fig, prefix, tight=True)


def plot_curves(res: Results, prefix: Path) -> object:
    """Test accuracy per epoch of every preset at the small batch, lr 0.1 (mean over seeds)."""
    df = res.df
    small = df["grid_batch"].min() if len(df) else None
    sub = df[(df["grid_batch"] == small) & (df["grid_lr"] == 0.1)]
    return loss_and_accuracy(sub, LABELS, f"Batch {small}, lr 0.1 (mean over seeds)", prefix)


def figures(depth: int) -> tuple[Figure, ...]:
    return (
        Figure("signal_propagation", f"Figure 1 (2021a) at CIFAR scale: per residual block of "
               f"ResNet-{depth} at initialization (init seed 0; the claims use every seed of "
               "spp.csv), the average squared channel mean and channel variance of BN-ResNet, "
               "the same net without normalization and NF-ResNet", plot_spp),
        Figure("stability", "Final training loss at each lr of the grid, per batch size and "
               "preset (dots: seeds; line: their mean; x in the grey band: diverged, with the "
               "count of diverged seeds when a cell has several)", plot_stability),
        Figure("clipping", "AGC's clipping threshold at the small batch, lr 0.1: final test "
               "accuracy (left) and the share of units clipped in the last epoch (right) "
               "against λ; lines across: NF-ResNet and BN-ResNet without AGC", plot_clipping),
        Figure("curves", "Training loss and test accuracy per epoch at the small batch, lr 0.1 "
               "(mean over seeds)", plot_curves),
    )  # fmt: skip

"""Brock, De & Smith 2021a (NF-ResNets, Scaled WS, signal propagation) and Brock, De, Smith &
Simonyan 2021b (Adaptive Gradient Clipping), at CIFAR-10 scale: BN-ResNet, the unnormalized
ResNet and NF-ResNet, with and without AGC, at a small and a large batch over an lr grid.

Runs: conf/experiment/nfnet/<preset>.yaml, in runs/nfnet[-quick]/<preset>/b<B>/lr<lr>/seed<k>.
The signal-propagation measurement needs no runs: ``prepare`` computes it at init (seconds)
and keeps it in ``spp.csv`` beside runs.csv.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.figures import loss_and_accuracy, signal_propagation
from trainrepro.reproduce.paper import (
    FAIL,
    NOT_CHECKED,
    NOT_SHOWN,
    PASS,
    Claim,
    Figure,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    Verdict,
    fmt,
)  # fmt: skip

LABELS = {
    "bn_resnet": "BN-ResNet",
    "bn_resnet_agc": "BN-ResNet + AGC",
    "plain_resnet": "ResNet, no norm",
    "plain_resnet_agc": "ResNet, no norm + AGC",
    "nf_resnet": "NF-ResNet",
    "nf_resnet_agc": "NF-ResNet + AGC",
    "nf_resnet_clip": "NF-ResNet + global-norm clip",
}
SPP_FILE = "spp.csv"
SPP_DEPTH = 56  # ResNet-56 at init: 27 residual blocks, 9 per stage
LN10 = math.log(10.0)  # the loss of a uniform prediction over 10 classes
MATCH_POINTS = 3.0  # "within a few points" (the acceptance; the papers: "match")
GROWS, BOUNDED = 100.0, 10.0  # the SPP check's factors (see the claim's acceptance text)


def _run(preset: str, batch: int, lr: float, seed: int = 0) -> Run:
    return Run(
        f"{preset}/b{batch}/lr{lr:g}/seed{seed}",
        preset,
        seed,
        (f"batch_size={batch}", f"optimizer.lr={lr:g}"),
    )


FULL_GRID = {128: (0.05, 0.1, 0.2, 0.4, 0.8, 1.6), 4096: (0.8, 1.6, 3.2, 6.4, 12.8)}
QUICK_SMALL, QUICK_LARGE = 128, 512  # conf/profile/nfnet_quick.yaml explains 512
QUICK_GRID = (0.4, 1.6, 6.4)  # 1x, 4x, 16x the linearly scaled 0.1 * 512 / 128
QUICK_PRESETS = ("bn_resnet", "plain_resnet", "nf_resnet", "nf_resnet_agc")

PROFILES = {
    "full": Profile(
        "full",
        tuple(_run(p, b, lr) for b, grid in FULL_GRID.items() for lr in grid for p in LABELS),
        note="GPU, 77 runs: 7 presets x (6 lrs at batch 128 + 5 at batch 4096), seed 0",
    ),
    "quick": Profile(
        "quick",
        tuple(_run(p, QUICK_LARGE, lr) for lr in QUICK_GRID for p in QUICK_PRESETS)
        + tuple(_run(p, QUICK_SMALL, 0.1) for p in QUICK_PRESETS),
        config=("profile=nfnet_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 6.3 min (measured): depth 8, 5,000 images, 6 epochs; BN-, "
        "unnormalized and NF-ResNet (+AGC) at batch 128 (lr 0.1) and 512 (lr 0.4, 1.6, 6.4)",
    ),
}

# The papers print no CIFAR numbers (both train on ImageNet); what they state, with sources.
NUMBERS = (
    PaperNumber("alpha", 0.2, "0.2", "2021a Sec. 4; nfnets/nf_resnet.py"),
    PaperNumber("agc.clipping", 0.01, "0.01", "2021b Sec. 4.1; experiment_nfnets.py (B 4096)"),
    PaperNumber("agc.eps", 1e-3, "1e-3", "2021b Sec. 4.1; nfnets/agc_optax.py"),
    PaperNumber("gamma.relu", math.sqrt(2 / (1 - 1 / math.pi)), "sqrt(2/(1-1/pi))",
                "2021a Sec. 4.2; nfnets/base.py: 1.7139588594436646 (Monte Carlo)"),
)  # fmt: skip


def prepare(res: Results) -> None:
    """Grid batch and lr from the run path; the SPP rows (computed once, kept in spp.csv)."""
    parts = res.df["run_dir"].str.split("/")
    res.df["grid_batch"] = parts.str[1].str.removeprefix("b").astype(int)
    res.df["grid_lr"] = parts.str[2].str.removeprefix("lr").astype(float)
    saved = res.out / SPP_FILE
    if saved.is_file():
        res.extras["spp"] = pd.read_csv(saved)
        res.notes.append(f"Signal propagation: read from `{SPP_FILE}` (delete it to recompute).")
    else:
        from trainrepro.instruments.signal_prop import measure

        spp = measure(SPP_DEPTH, batch=32)
        res.out.mkdir(parents=True, exist_ok=True)
        spp.to_csv(saved, index=False)
        res.extras["spp"] = spp


def _stable(row: pd.Series) -> bool:
    """Completed, and learned something: final training loss below the uniform guess's."""
    return row["status"] == "completed" and float(row["train_loss"]) < LN10


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run in final.itertuples(index=False):
        row = pd.Series(run._asdict())
        rows.append(
            {
                "preset": row["preset"], "batch": int(row["grid_batch"]),
                "lr": float(row["grid_lr"]), "status": row["status"],
                "stable": _stable(row),
                # A diverged run's last metrics are recorded, never averaged with the rest.
                "test_acc": float(row["test_acc"]) if row["status"] == "completed" else math.nan,
                "train_loss": float(row["train_loss"]),
                "agc": float(row.get("agc_clipped_units", math.nan)),
            }
        )  # fmt: skip
    order = {p: i for i, p in enumerate(LABELS)}
    df = pd.DataFrame(rows)
    return df.sort_values(
        ["batch", "preset", "lr"], key=lambda c: c.map(order) if c.name == "preset" else c
    )


def table(res: Results) -> str:
    lines = [
        f"# Brock et al. 2021a/b on CIFAR-10 ({res.name})",
        "",
        "| batch | preset | lr | status | stable | final test acc. (%) | final train loss "
        "| AGC: units clipped, last epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summarize(res.final()).itertuples():
        lines.append(
            f"| {r.batch} | {LABELS.get(r.preset, r.preset)} | {r.lr:g} | {r.status} "
            f"| {'yes' if r.stable else 'no'} | {fmt(r.test_acc)} | {fmt(r.train_loss, 3)} "
            f"| {fmt(100 * r.agc, 1) + '%' if not math.isnan(r.agc) else '—'} |"
        )
    lines += [
        "",
        "One seed per cell. stable: completed and final training loss below ln 10 (the uniform",
        "guess); diverged: a non-finite loss (summary.json status), its accuracy not reported.",
        "The papers have no CIFAR numbers (ImageNet only); the comparison is between presets.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- claims
def check_spp(res: Results) -> Verdict:
    spp = res.extras.get("spp")
    if spp is None or spp.empty:
        return Verdict(NOT_CHECKED, "no signal-propagation rows")
    stats = {}
    for label, sub in spp.groupby("variant", sort=False):
        sq = sub.sort_values("block")["avg_sq_mean"].astype(float)
        stats[label] = (sq.iloc[0], sq.iloc[-1], sq.max())
    plain, bn, nf = (stats.get(v) for v in ("ResNet, no normalization", "BN-ResNet", "NF-ResNet"))
    if plain is None or bn is None or nf is None:
        return Verdict(NOT_CHECKED, f"variants missing: {sorted(stats)}")
    grows = plain[1] / plain[0]
    ok = grows >= GROWS and bn[2] <= BOUNDED and nf[2] <= BOUNDED
    detail = (
        f"ResNet-{int(spp['depth'].iloc[0])} at init, N(0,1) batch of {int(spp['batch'].iloc[0])}: "
        "average squared channel "
        f"mean, first -> last residual block (max): no normalization {plain[0]:.3g} -> "
        f"{plain[1]:.3g} (x{grows:.3g}); BN {bn[0]:.3g} -> {bn[1]:.3g} (max {bn[2]:.3g}); "
        f"NF {nf[0]:.3g} -> {nf[1]:.3g} (max {nf[2]:.3g})"
    )
    numbers = {"plain_growth": grows, "bn_max": bn[2], "nf_max": nf[2]}
    return Verdict(PASS if ok else FAIL, detail, numbers)


def check_nf_matches_bn(res: Results) -> Verdict:
    s = summarize(res.final())
    batch = int(s["batch"].min()) if len(s) else 0
    at = s[(s["batch"] == batch) & (s["lr"] == 0.1)].set_index("preset")
    if not {"bn_resnet", "nf_resnet"} <= set(at.index):
        return Verdict(NOT_CHECKED, f"no BN-ResNet and NF-ResNet runs at batch {batch}, lr 0.1")
    bn, nf = at.loc["bn_resnet", "test_acc"], at.loc["nf_resnet", "test_acc"]
    if math.isnan(bn) or math.isnan(nf):
        return Verdict(FAIL, f"batch {batch}, lr 0.1: a run diverged (BN {bn}, NF {nf})")
    gap = bn - nf
    detail = (
        f"batch {batch}, lr 0.1, seed 0: final test accuracy NF-ResNet {nf:.2f}%, BN-ResNet "
        f"{bn:.2f}% (gap {gap:+.2f} points; within {MATCH_POINTS:g} passes)"
    )
    return Verdict(PASS if gap <= MATCH_POINTS else FAIL, detail, {"bn": bn, "nf": nf})


def _largest_stable(s: pd.DataFrame, preset: str) -> tuple[float, int, int]:
    sub = s[s["preset"] == preset]
    stable = sub[sub["stable"]]["lr"]
    return (stable.max() if len(stable) else 0.0), len(stable), len(sub)


def check_agc_stability(res: Results) -> Verdict:
    s = summarize(res.final())
    large = s[s["batch"] == s["batch"].max()] if len(s) else s
    (lr_nf, n_nf, t_nf), (lr_agc, n_agc, t_agc) = (
        _largest_stable(large, p) for p in ("nf_resnet", "nf_resnet_agc")
    )
    if t_nf < 2 or t_agc < 2:
        return Verdict(NOT_CHECKED, "fewer than two lrs at the large batch per preset")
    batch = int(large["batch"].iloc[0])
    detail = (
        f"batch {batch}: stable lrs NF-ResNet {n_nf}/{t_nf} (largest {lr_nf:g}), NF-ResNet + AGC "
        f"{n_agc}/{t_agc} (largest {lr_agc:g}); statuses: "
        + ", ".join(f"{LABELS[r.preset]} lr {r.lr:g} {r.status}"
                    f"{'' if r.stable else ' (unstable)'}" for r in large.itertuples()
                    if r.preset in ("nf_resnet", "nf_resnet_agc"))
    )  # fmt: skip
    numbers = {"nf_largest": lr_nf, "agc_largest": lr_agc, "nf_stable": n_nf, "agc_stable": n_agc}
    if n_nf == t_nf and n_agc == t_agc:
        return Verdict(
            NOT_SHOWN,
            detail + ". Every lr of the grid is stable with and without "
            "AGC: the grid does not reach NF-ResNet's instability here",
            numbers,
        )
    return Verdict(PASS if lr_agc > lr_nf else FAIL, detail, numbers)


CLAIMS = (
    Claim(
        "signal_propagation",
        "At initialization the unnormalized ResNet's mean shift grows with depth; BN-ResNet's "
        "and NF-ResNet's stay bounded",
        "2021a Sec. 3-4, Fig. 1",
        f"ResNet-{SPP_DEPTH}'s average squared channel mean grows >= {GROWS:g}x from the first "
        f"to the last residual block without normalization, and never exceeds {BOUNDED:g} (an "
        "order of magnitude above the unit-variance input) with BN or in NF-ResNet",
        check_spp,
    ),
    Claim(
        "nf_matches_bn",
        "NF-ResNets train to the accuracy of batch-normalized ResNets",
        "2021a Sec. 5, Table 1 (ImageNet)",
        f"at the small batch, lr 0.1: NF-ResNet's final test accuracy is at most "
        f"{MATCH_POINTS:g} points below BN-ResNet's",
        check_nf_matches_bn,
    ),
    Claim(
        "agc_stability",
        "At a large batch, AGC lets NF-ResNets train stably at larger learning rates",
        "2021b Sec. 4.1, Fig. 2",
        "at the large batch, the largest lr of the grid at which NF-ResNet + AGC is stable "
        "(completed, final train loss < ln 10) is larger than without AGC",
        check_agc_stability,
    ),
)


# ---------------------------------------------------------------- figures
def plot_spp(res: Results, prefix: Path) -> object:
    """Fig. 1 at CIFAR scale, from the SPP rows (no runs needed)."""
    spp = res.extras.get("spp")
    return None if spp is None else signal_propagation(spp, prefix)


def plot_stability(res: Results, prefix: Path) -> object:
    """Final training loss against lr at each batch size, per preset; x: diverged."""
    s = summarize(res.final())
    if s.empty:
        return None
    batches = sorted(s["batch"].unique())
    fig = MplFigure(figsize=(4.6 * len(batches), 3.8), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        sub = s[s["batch"] == batch]
        for i, preset in enumerate(p for p in LABELS if p in set(sub["preset"])):
            runs = sub[sub["preset"] == preset].sort_values("lr")
            ok = runs[runs["status"] != "diverged"]
            ax.plot(ok["lr"], ok["train_loss"].clip(upper=10), marker="o", color=f"C{i}",
                    label=LABELS[preset])  # fmt: skip
            bad = runs[runs["status"] == "diverged"]
            ax.scatter(bad["lr"], [10.0] * len(bad), marker="x", s=60, color=f"C{i}")
        ax.axhline(LN10, color="grey", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", title=f"batch {batch}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final training loss (x: diverged; dashed: ln 10)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Stability over the lr grid (Brock et al. 2021b, Sec. 4.1)")
    return save(fig, prefix, tight=True)


def plot_curves(res: Results, prefix: Path) -> object:
    """Test accuracy per epoch of every preset at the small batch, lr 0.1."""
    df = res.df
    small = df["grid_batch"].min() if len(df) else None
    sub = df[(df["grid_batch"] == small) & (df["grid_lr"] == 0.1)]
    return loss_and_accuracy(sub, LABELS, f"Batch {small}, lr 0.1 (seed 0)", prefix)


FIGURES = (
    Figure("signal_propagation", f"Figure 1 (2021a) at CIFAR scale: per residual block of "
           f"ResNet-{SPP_DEPTH} at initialization, the average squared channel mean and channel "
           "variance of BN-ResNet, the same net without normalization and NF-ResNet", plot_spp),
    Figure("stability", "Final training loss against the learning rate at each batch size, "
           "per preset (x: diverged)", plot_stability),
    Figure("curves", "Training loss and test accuracy per epoch at the small batch, lr 0.1",
           plot_curves),
)  # fmt: skip

PAPER = Paper(
    name="nfnet",
    title="Brock et al. 2021a/b (NF-ResNets, AGC)",
    citation='Brock, De & Smith, "Characterizing signal propagation to close the performance gap '
    'in unnormalized ResNets", ICLR 2021 (arXiv:2101.08692); Brock, De, Smith & Simonyan, '
    '"High-Performance Large-Scale Image Recognition Without Normalization", ICML 2021 '
    "(arXiv:2102.06171); at CIFAR-10 scale",
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/b{batch}/lr{lr:g}/seed{seed}",
    prepare=prepare,
)

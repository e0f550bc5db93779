"""Large-batch training: accuracy against batch size at a fixed number of epochs (Goyal et al.
2017, Fig. 1 / Table 1), with SGD unscaled, SGD with linear scaling and gradual warmup,
Nesterov with the same care (Nado et al. 2021), LARS (You, Gitman & Ginsburg 2017) and LAMB
(You et al. 2020), on CIFAR-10; and the sharp-vs-flat picture of the small- and large-batch
solutions (Keskar et al. 2017; Li et al. 2018; scripts/plot_landscape.py).

Runs: conf/experiment/largebatch/<preset>.yaml in runs/largebatch[-quick]/<preset>/b<B>/seed<k>;
the cells the claims compare at seeds 0-2 (every cell of the quick profile). The claims are in
largebatch_claims.py, the sharpness over several directions in largebatch_landscape.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Paper, PaperNumber, Profile, Results, Run
from trainrepro.reproduce.papers.largebatch_claims import CHANCE, CLAIMS, cells
from trainrepro.reproduce.papers.largebatch_landscape import SHARPNESS_FILE, compute
from trainrepro.reproduce.scripts import load_script

LABELS = {
    "sgd": "SGD, no scaling",
    "sgd_scaled": "SGD, linear scaling + warmup",
    "nesterov": "Nesterov, scaling + warmup",
    "lars": "LARS, scaling + warmup",
    "lamb": "LAMB, scaling + warmup",
}
SCALED = ("sgd_scaled", "nesterov", "lars", "lamb")
BATCHES = {
    "full": (128, 256, 512, 1024, 2048, 4096, 8192),
    "medium": (128, 1024, 8192),  # the full profile's 1x, 8x, 64x, as quick's 32, 256, 2048
    "quick": (32, 256, 2048),
}
REFERENCE = {"full": 128, "medium": 128, "quick": 32}  # the batch at which optimizer.lr was chosen
QUICK_WARMUP = 1  # epochs (full: the presets' 5)
SHORT_WARMUP = {"quick": QUICK_WARMUP, "medium": 1}  # medium: 1 of 4 epochs (5 would never end)
SEEDS = (0, 1, 2)  # of every compared cell
LANDSCAPE_FILE = "landscape.json"  # the landscape figure's numbers, kept beside runs.csv

# Verified numbers only; Goyal et al.'s Table 1 errors (the survey of the paper, papers.md
# sec. 5 [S]) are quoted by the claims that use them.
NUMBERS = (
    PaperNumber("goyal.max_batch", 8192, "8192", "Goyal et al. 2017, abstract: no loss of "
                "accuracy up to this minibatch (ResNet-50, ImageNet)"),
    PaperNumber("nado.nesterov_top1", 75.92, "75.92% in 2512 steps", "Nado et al. 2021, "
                "ResNet-50 MLPerf v0.7 with Nesterov (paperswithcode listing of 2102.06356)"),
)  # fmt: skip


def compared(profile: str) -> set[tuple[str, int]]:
    """The (preset, batch) cells the claims compare: unscaled SGD at the base, 8x and the
    largest batch; scaled SGD at 8x and the largest; Nesterov, LARS, LAMB at 8x and above."""
    batches = BATCHES[profile]
    base, largest = batches[0], batches[-1]
    out = {("sgd", b) for b in (base, 8 * base, largest)} | {
        ("sgd_scaled", b) for b in (8 * base, largest)
    }
    return out | {(p, b) for p in ("nesterov", "lars", "lamb") for b in batches if b >= 8 * base}


def _run(preset: str, batch: int, profile: str, seed: int) -> Run:
    overrides = [f"batch_size={batch}"]
    if preset in SCALED:  # Goyal et al.'s warmup starts at the unscaled lr
        overrides.append(f"schedule.warmup_start_factor={REFERENCE[profile] / batch:g}")
        if profile in SHORT_WARMUP:
            overrides.append(f"schedule.warmup_epochs={SHORT_WARMUP[profile]}")
    return Run(f"{preset}/b{batch}/seed{seed}", preset, seed, tuple(overrides))


def _runs(profile: str, plan: dict[str, tuple[int, ...]]) -> tuple[Run, ...]:
    # Small batches first: they have the most updates, so they take longest.
    pairs = sorted(((b, p) for p, bs in plan.items() for b in bs), key=lambda x: x[0])
    chosen = compared(profile)
    return tuple(_run(p, b, profile, s) for b, p in pairs
                 for s in (SEEDS if (p, b) in chosen else (0,)))  # fmt: skip


_QUICK_PLAN = {"sgd": (32, 256, 2048), **{p: (256, 2048) for p in SCALED}}
_MEDIUM_PLAN = {"sgd": (128, 1024, 8192), **{p: (1024, 8192) for p in SCALED}}
PROFILES = {
    "full": Profile(
        "full",
        _runs("full", {p: BATCHES["full"] for p in LABELS}),
        note="GPU, 69 runs: 5 presets x batch 128 ... 8192, 90 epochs, seed 0; the compared "
        "cells (unscaled SGD at 128, 1024, 8192; scaled SGD at 1024, 8192; Nesterov, LARS, "
        "LAMB at 1024 ... 8192) also at seeds 1-2",
    ),
    "quick": Profile(
        "quick",
        _runs("quick", _QUICK_PLAN),
        config=("profile=largebatch_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16: SGD at batch 32, 256, 2048; scaled SGD, Nesterov, LARS, LAMB "
        "at 256 and 2048 (ResNet-8, 10k images, 10 epochs), every cell at seeds 0-2: 33 runs, "
        "20 min wall measured 2026-12-04 (1,193 s for the 33 runs)",
    ),
    "medium": Profile(
        "medium",
        _runs("medium", _MEDIUM_PLAN),
        config=("profile=largebatch_medium",),
        jobs=8,
        threads=2,
        note="one GPU, fp32, estimated ~7 min with 8 runs at a time (from issue 20's H200 "
        "measurement, not a measured time): SGD at batch 128, 1024, 8192; scaled SGD, "
        "Nesterov, LARS, LAMB at 1024 and 8192 (ResNet-20, all 50,000 images, 4 epochs, a "
        "1-epoch warmup), every cell at seeds 0-2: 33 runs",
    ),
}

SETTING = (
    "Goyal et al. train ResNet-50 on ImageNet (1.28M images) for 90 epochs at batch 256 ... 8k "
    "(up to 64k), lr 0.1 x B/256 after a 5-epoch gradual warmup, steps at 30, 60, 80, Nesterov "
    "0.9, BN over 32 images per worker, on up to 256 GPUs; 5 runs per point (survey of the "
    "paper). At 8k that is ~156 updates an epoch, ~14,000 in all, a ~780-update warmup. LARS, "
    "LAMB and Nado et al. work at 8k-32k on ImageNet (and BERT). Full profile: CIFAR ResNet-20 "
    "on all 50,000 CIFAR-10 images, 90 epochs, batch 128 ... 8192, 5-epoch warmup, ghost BN of "
    "32. Quick profile: ResNet-8 on a stratified 10,000 images, 10 epochs (steps at 3, 6, 8), "
    "batch 32, 256, 2048 (1x, 8x, 64x the base 32), a 1-epoch warmup, bf16 on 2 CPU cores: at "
    "B = 2048 that is 4 updates an epoch, 40 in all, a 4-update warmup, against Goyal et al.'s "
    "~14,000 at 8k; at B = 256, 390 updates, a 39-update warmup. Compared cells at seeds 0-2 "
    "(Goyal et al.: 5 runs)"
)


def prepare(res: Results) -> None:
    """The batch of each run (from its folder); the landscape figure's numbers and the
    sharpness over several directions (from the runs' checkpoints when present, else from the
    JSON files kept beside runs.csv)."""
    res.df["batch"] = res.df["run_dir"].str.extract(r"/b(\d+)/")[0].astype(int)
    saved, sharp = res.out / LANDSCAPE_FILE, res.out / SHARPNESS_FILE
    pair = _landscape_pair(res)
    root = res.run_root
    if root is not None and pair is not None:
        pairs = {s: tuple(f"sgd/b{b}/seed{s}" for b in pair) for s in SEEDS}
        pairs = {s: d for s, d in pairs.items()
                 if all((root / r / "checkpoint.pt").is_file() for r in d)}  # fmt: skip
        if pairs:
            res.extras["sharpness"] = compute(root, pairs, sharp, pair)
        dirs = [root / "sgd" / f"b{b}" / "seed0" for b in pair]
        if all((d / "checkpoint.pt").is_file() for d in dirs):
            data = load_script("plot_landscape").landscape(*dirs)
            data["batches"] = list(pair)
            res.extras["landscape"] = data
            res.out.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(data, indent=1) + "\n")
            return
    if saved.is_file():
        res.extras["landscape"] = json.loads(saved.read_text())
        res.notes.append(f"Landscape numbers: kept from `{saved.name}` (run dirs absent).")
    if "sharpness" not in res.extras and sharp.is_file():
        res.extras["sharpness"] = json.loads(sharp.read_text())
        res.notes.append(f"Sharpness over directions: kept from `{sharp.name}`.")


def _landscape_pair(res: Results) -> tuple[int, int] | None:
    batches = sorted(set(res.df.loc[res.df["preset"] == "sgd", "batch"]))
    return (batches[0], batches[-1]) if len(batches) > 1 else None


def summarize(res: Results) -> pd.DataFrame:
    """One row per (preset, batch): seeds run and declared, final test accuracy (mean and sd
    over the completed runs), updates, statuses."""
    final = res.final()
    declared: dict[tuple[str, int], int] = {}
    for run in res.paper.profiles[res.profile].runs:
        key = (run.preset, int(run.path.split("/")[1].removeprefix("b")))
        declared[key] = declared.get(key, 0) + 1
    rows = []
    for (preset, batch), sub in final.groupby(["preset", "batch"], sort=False):
        done = sub[sub["status"] == "completed"]["test_acc"].astype(float)
        rows.append({
            "preset": preset, "batch": int(batch), "runs": len(sub),
            "declared": declared.get((preset, int(batch)), 0),
            "statuses": "/".join(sorted(set(sub["status"]))), "completed": len(done),
            "test_acc": done.mean() if len(done) else math.nan,
            "sd": done.std() if len(done) > 1 else math.nan,
            "updates": int(sub["updates"].max()),
        })  # fmt: skip
    order = {p: i for i, p in enumerate(LABELS)}
    df = pd.DataFrame(rows)
    return df.sort_values(["preset", "batch"], key=lambda c: c.map(order) if c.name == "preset"
                          else c).reset_index(drop=True)  # fmt: skip


def table(res: Results) -> str:
    summary = summarize(res)
    batches = sorted(set(summary["batch"]))
    lines = [
        f"# Large-batch training on CIFAR-10 ({res.name})",
        "",
        "Final test accuracy (%) per batch size: mean ± sd over the completed seeds (one number:",
        "one run); in brackets the updates in the run and the seeds run of those declared; —: not",
        "run at that batch.",
        "",
        "| preset | " + " | ".join(f"B = {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for preset in (p for p in LABELS if p in set(summary["preset"])):
        row_cells = []
        for b in batches:
            row = summary[(summary["preset"] == preset) & (summary["batch"] == b)]
            if row.empty:
                row_cells.append("—")
                continue
            r = row.iloc[0]
            shown = "diverged" if not r.completed else (
                f"{r.test_acc:.2f}" + (f" ± {r.sd:.2f}" if r.completed > 1 else ""))
            if r.completed and r.completed < r.runs:
                shown += f", {r.runs - r.completed} not completed"
            row_cells.append(f"{shown} ({r.updates}; {r.runs}/{r.declared} seeds)")
        lines.append(f"| {LABELS[preset]} | " + " | ".join(row_cells) + " |")
    lines += [
        "",
        "The papers' numbers, for context only (ImageNet / ResNet-50, not comparable):",
        "",
        "| paper | number | source |",
        "|---|---|---|",
        *(f"| {n.key.split('.')[0]} | {n.shown} | {n.source} |" for n in NUMBERS),
        "",
        "Goyal et al.'s Table 1 top-1 errors, from the survey of the paper: 23.60 ± 0.12 at 256;",
        "at 8k 23.74 ± 0.09 with gradual warmup, 41.67 ± 0.10 without lr scaling; 16k: 24.79.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures
def plot_error(res: Results, prefix) -> object:
    """Final top-1 test error against batch size, one line per preset (the mean over seeds;
    dots: the seeds; a diverged run counts as chance), as Goyal et al.'s Fig. 1 plots it."""
    have = cells(res)
    if not have:
        return None
    fig = MplFigure(figsize=(6.6, 4.4), layout="constrained")
    ax = fig.subplots()
    batches = sorted({b for _, b in have})
    for i, preset in enumerate(LABELS):
        bs = [b for b in batches if (preset, b) in have]
        if not bs:
            continue
        errs = [[100.0 - a for a in have[(preset, b)].values()] for b in bs]
        shift = 1.0 + 0.035 * (i - 2)  # side by side on the log axis, so no dot hides another
        for b, e in zip(bs, errs, strict=True):
            ax.scatter([b * shift] * len(e), e, s=12, color=f"C{i}", alpha=0.5)
        ax.plot([b * shift for b in bs], [np.mean(e) for e in errs], "o-", color=f"C{i}",
                label=LABELS[preset])  # fmt: skip
    ax.axhline(100.0 - CHANCE, color="grey", ls=":", lw=0.8, label="chance (90% error)")
    ax.set(xscale="log", xlabel="batch size", ylabel="final top-1 test error (%)")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Error vs batch size at a fixed number of epochs (Goyal et al. 2017, Fig. 1)",
                 fontsize=10)  # fmt: skip
    return save(fig, prefix, tight=True)


def plot_landscape(res: Results, prefix) -> object:
    data = res.extras.get("landscape")
    if not data:
        return None
    titles = [f"B={b}" for b in data.get("batches", ("A", "B"))]
    return load_script("plot_landscape").plot(data, prefix, titles)


FIGURES = (
    Figure("error_vs_batch", "Final top-1 test error against batch size (log scale) for SGD "
           "without scaling, SGD with linear scaling + warmup, Nesterov, LARS and LAMB: the mean "
           "over seeds, dots the seeds (Goyal et al. 2017, Fig. 1 analogue, which plots error "
           "too)", plot_error),
    Figure("landscape", "Left: training loss and test accuracy along the line from the "
           "base-batch to the largest-batch SGD solution (Keskar et al. 2017, Fig. 3); right: "
           "training loss along a filter-normalized random direction around each (Li et al. "
           "2018)", plot_landscape, needs_run_dirs="checkpoint.pt"),
)  # fmt: skip

PAPER = Paper(
    name="largebatch",
    title="Large-batch training (Goyal et al. 2017; LARS; LAMB; Nado et al. 2021)",
    citation='Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", '
    'arXiv:1706.02677; You, Gitman & Ginsburg, "Large Batch Training of Convolutional '
    'Networks", arXiv:1708.03888; You et al., "Large Batch Optimization for Deep Learning: '
    'Training BERT in 76 Minutes", ICLR 2020; Nado et al., "A Large Batch Optimizer Reality '
    'Check", arXiv:2102.06356; Keskar et al., ICLR 2017; Li et al., NeurIPS 2018',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/b{batch}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
)

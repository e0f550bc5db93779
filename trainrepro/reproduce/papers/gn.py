"""Wu & He 2018 (Group Normalization), Figure 1 / Table 2 at CIFAR-10 scale: test error against
the batch size for BN, GN, LN, IN and GN + WS, with Qiao et al. 2019 (Weight Standardization):
GN + WS at a batch of 1-2 against BN at a large batch, sharing the runs.

Runs: conf/experiment/gn/<preset>.yaml, in runs/gn[-quick]/<preset>/b<B>/seed<k>; the lr is
0.1 x B / 128 at every batch size (schedule.scale_lr_with_batch). The claims compare the
smallest and the largest batch of each norm (3 seeds per cell, paired by seed): gn_claims.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullLocator

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Paper, PaperNumber, Profile, Results, Run, fmt
from trainrepro.reproduce.papers.gn_claims import CLAIMS

LABELS = {"bn": "BN", "gn": "GN", "gn_ws": "GN + WS", "ln": "LN", "in": "IN"}
FULL_BATCHES = (2, 4, 8, 16, 32, 64, 128)
QUICK_BATCHES = (2, 8, 64)
MEDIUM_BATCHES = (2, 8, 128)  # the quick cells, with the full profile's largest batch
SEEDS = range(3)  # per compared cell: the smallest and the largest batch of every norm


def _run(preset: str, batch: int, seed: int = 0) -> Run:
    return Run(f"{preset}/b{batch}/seed{seed}", preset, seed, (f"batch_size={batch}",))


def _grid(batches: tuple[int, ...], extra: tuple[tuple[str, int], ...] = ()) -> tuple[Run, ...]:
    """Every norm at every batch; the claims' cells (each norm's smallest and largest batch,
    and ``extra``) at every seed in SEEDS, the others (shape only) at seed 0. Smallest batches
    first: they are the longest runs, and fill the workers best."""
    compared = {(p, b) for p in LABELS for b in (batches[0], batches[-1])} | set(extra)
    cellset = sorted({(p, b) for p in LABELS for b in batches} | set(extra),
                     key=lambda c: (c[1], list(LABELS).index(c[0])))  # fmt: skip
    return tuple(_run(p, b, s) for p, b in cellset
                 for s in (SEEDS if (p, b) in compared else range(1)))  # fmt: skip


PROFILES = {
    "full": Profile(
        "full",
        _grid(FULL_BATCHES, (("gn_ws", 1),)),
        note="GPU, 58 runs: BN, GN, GN+WS, LN, IN at batch 2, 4, ..., 128 and GN+WS at batch 1, "
        "ResNet-20, 100 epochs; seeds 0-2 at each norm's batch 2 and 128 (and GN+WS at 1), "
        "seed 0 in between; estimated ~160 GPU-hours (mostly the batches of 1 and 2)",
    ),
    "quick": Profile(
        "quick",
        _grid(QUICK_BATCHES),
        config=("profile=gn_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, 67 min wall (measured 2026-12-04, two runs at a time beside other "
        "work on the same cores): ResNet-8, 5,000 images, 8 epochs; BN, GN, GN+WS, LN, IN at "
        "batch 2 and 64 over seeds 0-2, and at batch 8 (shape only) at seed 0: 35 runs",
    ),
    "medium": Profile(
        "medium",
        _grid(MEDIUM_BATCHES),
        config=("profile=gn_medium",),
        jobs=8,
        threads=2,
        note="one GPU, 8 runs at a time, ~6.2 min (an estimate from issue 20's H200 "
        "measurement and an assumed upper bound of 1,500 updates/s a run at batch 2-8, not "
        "measured: 35 runs × 2 epochs × 50,000 = 3,500,000 training images, 812,500 updates "
        "at batch ≤ 32; conf/profile/gn_medium.yaml): ResNet-20 on all 50,000 images, fp32, "
        "2 epochs; BN, GN, GN+WS, LN, IN at batch 2 and 128 over seeds 0-2, and at batch 8 "
        "(shape only) at seed 0",
    ),
}

SETTING = (
    "Wu & He train ResNet-50 on ImageNet (1.28M images, 1,000 classes) for 100 epochs on 8 GPUs "
    "with 2 to 32 images per GPU (BN statistics per GPU), lr 0.1 x B / 256 stepped at 30, 60 "
    "and 90, GN with 32 groups, and report top-1 validation error; Qiao et al. train GN + WS "
    "ResNet-50 at 1 image per GPU for 90 epochs. Ours: CIFAR-10 (10 classes, 32 x 32), one "
    "device (B = the whole batch), lr 0.1 x B / 128, the same epochs at every batch, GN with 8 "
    "groups. Full profile: ResNet-20, 100 epochs, all 50,000 training images, batches 1-128. "
    "Quick profile: ResNet-8 (78,042 parameters), 8 epochs on a stratified 5,000 of the "
    "training images, all 10,000 test images, fp32 on CPU, batches 2, 8 and 64, errors of "
    "55-70%. At that scale the large batches are under-trained: B = 64 makes 632 updates in "
    "all, B = 2 makes 20,000 at a 32x smaller lr, so even the norms that never see the batch "
    "(GN, LN, IN, GN + WS) change with B through the optimization alone; the paper's runs are "
    "trained to convergence at every batch. Medium profile: the full profile's ResNet-20 on "
    "all 50,000 training images, fp32 on one GPU, for 2 epochs (steps at 0.6, 1.2, 1.8), "
    "batches 2, 8 and 128: B = 128 makes 780 updates, B = 2 makes 50,000, so the large "
    "batches are under-trained there too"
)

_NV = "third-party transcriptions (they agree); not verified against the PDF"
_T2 = "Table 2 / Fig. 1 (ImageNet ResNet-50, top-1 val. error %, images per GPU)"
# Wu & He's ImageNet ResNet-50 numbers (their setting, not ours). Only the abstract's 10.6 is
# verified (ar5iv abstract); the per-batch rows are marked, see /work/shared/reference/papers.md.
NUMBERS = (
    PaperNumber("gn_minus_bn.b2", -10.6, "10.6% lower error (verified: abstract)",
                "Abstract; Table 2"),
    *(PaperNumber(f"bn.b{b}", v, f"{v} ({_NV})", _T2)
      for b, v in ((32, 23.6), (16, 23.7), (8, 24.8), (4, 27.3), (2, 34.7))),
    *(PaperNumber(f"gn.b{b}", v, f"{v} ({_NV})", _T2)
      for b, v in ((32, 24.1), (16, 24.2), (8, 24.0), (4, 24.2), (2, 24.1))),
    PaperNumber("gn.b32.reproduced", 24.0, "24.0, 24.0, 24.1 in 3 runs (verified)",
                "ppwwyyxx/GroupNorm-reproduce ImageNet-ResNet-TensorFlow/README.md"),
    PaperNumber("gn_ws.b1", 23.72, "23.72 (verified; 1 image/GPU, top-1 error %)",
                "Qiao et al.: joe-siyuan-qiao/pytorch-classification README.md, ResNet-50"),
)  # fmt: skip


def prepare(res: Results) -> None:
    """The grid batch and the seed from the run path (<preset>/b<B>/seed<k>), and the error
    in percent."""
    parts = res.df["run_dir"].str.split("/")
    res.df["grid_batch"] = parts.str[1].str.removeprefix("b").astype(int)
    res.df["run_seed"] = parts.str[2].str.removeprefix("seed").astype(int)
    res.df["test_err"] = 100.0 - res.df["test_acc"].astype(float)


def errors(res: Results, how: str = "mean") -> pd.DataFrame:
    """Final test error (%) per norm (rows) and batch (columns) over seeds: ``how`` is mean,
    std or count; diverged runs are NaN (and not counted)."""
    final = res.final()
    if final.empty:
        return pd.DataFrame()
    err = final["test_err"].where(final["status"] == "completed")
    table = (
        pd.DataFrame({"preset": final["preset"], "batch": final["grid_batch"], "err": err})
        .groupby(["preset", "batch"])["err"]
        .agg(how)
        .unstack("batch")
    )
    return table.reindex([p for p in LABELS if p in table.index])


def _err(e: pd.DataFrame, preset: str, batch: int) -> float:
    try:
        return float(e.loc[preset, batch])
    except KeyError:
        return math.nan


def _cell(mean: float, sd: float, n: float) -> str:
    if math.isnan(n) or n == 0:
        return "—"
    return fmt(mean) + (f" ± {sd:.2f}" if n > 1 else "") + f" ({n:.0f})"


def table(res: Results) -> str:
    e, sd, n = errors(res), errors(res, "std"), errors(res, "count")
    batches = sorted(e.columns) if len(e) else []
    lines = [
        f"# Wu & He 2018 / Qiao et al. 2019 on CIFAR-10 ({res.name})",
        "",
        "| norm | " + " | ".join(f"B={b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for preset in e.index:
        cells = [_cell(_err(e, preset, b), _err(sd, preset, b), _err(n, preset, b))
                 for b in batches]  # fmt: skip
        lines.append(f"| {LABELS[preset]} (ours) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ours: final test error (%), CIFAR-10, mean ± sd over seeds (seeds that finished in "
        "brackets), lr = 0.1 x B / 128, the same epochs at every B; — : diverged or not run. "
        "The claims pair the runs of two cells by seed.",
        "",
        "The papers' ImageNet ResNet-50 top-1 validation error (%), their setting (8 GPUs, B = "
        "images per GPU), for comparison of shape only:",
        "",
        "| norm | B=32 | B=16 | B=8 | B=4 | B=2 | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for norm in ("bn", "gn"):
        vals = [res.paper.number(f"{norm}.b{b}").value for b in (32, 16, 8, 4, 2)]
        lines.append(f"| {LABELS[norm]} | " + " | ".join(f"{v:g}" for v in vals)
                     + f" | Wu & He {_T2.split(' (')[0]}: **not verified** ({_NV}) |")  # fmt: skip
    lines += [
        "",
        "- verified: GN has 10.6 points lower error than BN at batch 2 (Wu & He, abstract); "
        "GN ResNet-50 at 32 images/GPU reproduced at 24.0, 24.0, 24.1 "
        "(ppwwyyxx/GroupNorm-reproduce, ImageNet-ResNet-TensorFlow/README.md); GN + WS "
        "ResNet-50 trained with 1 image/GPU: 23.72 (Qiao et al., joe-siyuan-qiao/"
        "pytorch-classification README.md; they note batch 256 with iteration size 1 is "
        "equivalent, GN + WS using no batch statistics).",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures
def plot_error_vs_batch(res: Results, prefix: Path) -> object:
    """Fig. 1 analogue: our error per norm against B (mean over seeds, each seed a dot),
    beside the paper's (not verified) rows."""
    e = errors(res)
    if e.empty:
        return None
    final = res.final()
    final = final[final["status"] == "completed"]
    fig = MplFigure(figsize=(10, 3.8), layout="constrained")
    ours, theirs = fig.subplots(1, 2)
    for i, preset in enumerate(LABELS):
        if preset in e.index:
            row = e.loc[preset].dropna()
            ours.plot(row.index, row.values, marker="o", color=f"C{i}", label=LABELS[preset])
            runs = final[final["preset"] == preset]
            ours.scatter(runs["grid_batch"], runs["test_err"], s=9, color=f"C{i}", alpha=0.5,
                         zorder=3, linewidths=0)  # fmt: skip
    ours.set(xscale="log", xlabel="batch size (images per device)", ylabel="test error (%)",
             title=f"Ours: CIFAR-10 ({res.name}); line: mean, dots: seeds")  # fmt: skip
    for i, norm in enumerate(("bn", "gn")):
        batches = (32, 16, 8, 4, 2)
        vals = [res.paper.number(f"{norm}.b{b}").value for b in batches]
        theirs.plot(batches, vals, marker="s", ls="--", color=f"C{i}", label=LABELS[norm])
    theirs.set(xscale="log", xlabel="images per GPU", ylabel="top-1 val. error (%)",
               title="Wu & He, ImageNet ResNet-50 (not verified)")  # fmt: skip
    for ax in (ours, theirs):
        ax.set_xticks(sorted(set(e.columns) if ax is ours else (2, 4, 8, 16, 32)))
        # Only the batch sizes are labelled: a log axis's minor ticks (3 x 10^0 ...) collide.
        ax.xaxis.set_minor_locator(NullLocator())
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.invert_xaxis()  # as the paper: the batch shrinks to the right
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, prefix, tight=True)


def plot_curves(res: Results, prefix: Path) -> object:
    """Test error per epoch of every norm at the smallest batch."""
    df = res.df
    if df.empty:
        return None
    small = int(df["grid_batch"].min())
    sub = df[df["grid_batch"] == small]
    fig = MplFigure(figsize=(5, 3.8), layout="constrained")
    ax = fig.subplots()
    for i, preset in enumerate(p for p in LABELS if p in set(sub["preset"])):
        curve = sub[sub["preset"] == preset].groupby("epoch")["test_err"].mean()
        ax.plot(curve.index, curve.values, color=f"C{i}", label=LABELS[preset])
    ax.set(xlabel="epoch", ylabel="test error (%)", title=f"Batch {small}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, prefix, tight=True)


FIGURES = (
    Figure("error_vs_batch", "Figure 1 analogue: final test error against the batch size, one "
           "curve per normalization (left, ours: mean over seeds, a dot per seed); Wu & He's "
           "ImageNet ResNet-50 BN and GN rows as transcribed by third parties, not verified "
           "against the PDF (right)", plot_error_vs_batch),
    Figure("curves_small_batch", "Test error per epoch of every normalization at the smallest "
           "batch (mean over seeds)", plot_curves),
)  # fmt: skip

PAPER = Paper(
    name="gn",
    title="Wu & He 2018 (Group Norm) / Qiao et al. 2019 (WS)",
    citation='Wu & He, "Group Normalization", ECCV 2018 (arXiv:1803.08494); Qiao, Wang, Liu, '
    'Shen & Yuille, "Weight Standardization" (arXiv:1903.10520, 2019); at CIFAR-10 scale',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/b{batch}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
)

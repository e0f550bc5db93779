"""Summers & Dinneen 2020 ("Four Things Everyone Should Know to Improve Batch Normalization"):
the BN baseline and each technique alone and combined: inference example weighting, ghost BN,
weight decay on gamma/beta (towards 0 and towards 1), Batch-Group Norm at B=2 against tuned GN.

Runs: conf/experiment/bn4things/<preset>.yaml, in runs/bn4things[-quick]/<preset>/<setting>/
seed<k>, 5 seeds of every setting. Example weighting needs no run: ``prepare`` runs bn-alpha on
the finished runs (bn4things_alpha.py). The claims, paired by seed: bn4things_claims.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Paper, PaperNumber, Profile, Results, Run, fmt
from trainrepro.reproduce.papers.bn4things_alpha import alpha_summary, attach_alpha_rows
from trainrepro.reproduce.papers.bn4things_claims import CLAIMS, PAPER_SAYS, accs

SEEDS = range(5)  # per compared cell: the effects are under a point
LABELS = {
    "baseline": "BN baseline (B=128)",
    "ghost_bn": "ghost BN",
    "wd_norm": "WD on gamma/beta",
    "combined": "ghost BN 16 + WD on gamma/beta",
    "gn_small": "GN, B=2",
    "bgn_small": "BGN, B=2",
}


def _runs(preset: str, setting: str, seeds: range, *overrides: str) -> tuple[Run, ...]:
    return tuple(Run(f"{preset}/{setting}/seed{s}", preset, s, overrides) for s in seeds)


def _profile_runs(ghosts: tuple[int, ...], groups: tuple[int, ...]) -> tuple[Run, ...]:
    """Every compared cell at every seed in SEEDS, the tuned settings (ghost sizes, groups)
    included: the one picked on validation is then compared seed by seed."""
    small = tuple(
        run
        for g in groups
        for preset in ("bgn_small", "gn_small")
        for run in _runs(preset, f"g{g}", SEEDS, f"normalization.groups={g}")
    )  # the B=2 runs are the longest: first
    return small + (
        _runs("baseline", "b128", SEEDS)
        + _runs("combined", "ghost16", SEEDS)
        + _runs("wd_norm", "to0", SEEDS)
        + _runs("wd_norm", "to1", SEEDS, "optimizer.norm_decay_target=1")
        + tuple(r for k in ghosts for r in _runs("ghost_bn", f"ghost{k}", SEEDS,
                                                 f"normalization.ghost_batch_size={k}"))
    )  # fmt: skip


PROFILES = {
    "full": Profile(
        "full",
        _profile_runs((8, 16, 32, 64), (2, 4, 8, 16)),
        note="GPU, CIFAR-100, 100 runs: ResNet-20, 100 epochs, 5 seeds each of the baseline, "
        "WD on gamma/beta towards 0 and 1, combined, ghost sizes 8-64, and GN and BGN at B=2 "
        "over groups 2-16; estimated ~130 GPU-hours (mostly the 40 runs at B=2)",
    ),
    "quick": Profile(
        "quick",
        _profile_runs((16, 32), (4, 16)),
        config=("profile=bn4things_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, CIFAR-10 (not the paper's CIFAR-100), 56 min wall with bn-alpha "
        "(measured 2026-12-05, two runs at a time, the cores shared with other work; "
        "1.5-3.3 min per run): ResNet-8, 4,500 + 500 validation images, 8 epochs; 50 runs (5 "
        "seeds of every setting) and bn-alpha on the 10 baseline and combined runs",
    ),
}
# The quick profile's runs (5 seeds of the same 10 settings) at the full profile's model on all
# 50,000 CIFAR-10 images for 2 epochs.
PROFILES["medium"] = Profile(
    "medium",
    PROFILES["quick"].runs,
    config=("profile=bn4things_medium",),
    jobs=8,
    threads=2,
    note="one GPU, 8 runs at a time, CIFAR-10 (CIFAR-100 is on none of the project's "
    "machines), ~7.8 min and bn-alpha (an estimate from issue 20's H200 measurement and an "
    "assumed upper bound of 1,500 updates/s a run at batch 2, not measured: 50 runs × 2 "
    "epochs × 45,000 = 4,500,000 training images, 900,000 updates at batch ≤ 32; "
    "conf/profile/bn4things_medium.yaml): ResNet-20, 45,000 + 5,000 validation images, fp32, "
    "2 epochs; 50 runs (5 seeds of every setting) and bn-alpha on the 10 baseline and combined "
    "runs",
)

SETTING = (
    "Summers & Dinneen report CIFAR-100 (with SVHN, Caltech-256, Flowers-102, CUB-2011 and "
    "ImageNet); the model, epochs and schedule of their CIFAR-100 runs were not at hand "
    "(papers.md sec. 3), so the full profile uses CIFAR defaults: ResNet-20, 100 epochs, "
    "B = 128 (B = 2 for GN and BGN, lr 0.1 x B / 128), SGD momentum 0.9, wd 5e-4, 10% of the "
    "training images held out to pick alpha, the ghost size and the groups. Their example "
    "weighting number is ResNet-152 on ImageNet, and their BGN-against-GN number includes "
    "example weighting; our BGN and GN runs have none (bn-alpha weights BN layers only). The "
    "quick profile: CIFAR-10 instead of CIFAR-100 (not on the CPU machine), ResNet-8 (78,042 "
    "parameters), 4,500 training and 500 validation images, all 10,000 test images, 8 epochs, "
    "fp32 on CPU, test accuracies about 44% at B = 128 and 37% at B = 2. One validation "
    "image is 0.2 points, so what is picked on validation is picked on a coarse, noisy split; "
    "5 seeds per setting, as the effects the paper reports are under a point. The medium "
    "profile: the quick profile's runs and CIFAR-10, with the full profile's ResNet-20 on all "
    "50,000 training images (5,000 of them for validation: one image is 0.02 points), 2 "
    "epochs (steps at 1 and 1.5), fp32 on one GPU"
)

NUMBERS = (
    PaperNumber("ew.gain", 0.6, "up to +0.6 top-1 (survey of the paper)",
                "example weighting, ResNet-152 on ImageNet"),
    PaperNumber("ghost_bn.gain", 0.84, "+0.84 (survey of the paper)", "ghost BN, CIFAR-100"),
    PaperNumber("wd_gamma_beta.gain", 0.3, "+0.3 points over ten runs (survey of the paper; "
                "papers.md sec. 3 [S])", "weight decay on gamma/beta, CIFAR-100"),
    PaperNumber("gn.b2", 73.91, "73.91 (survey of the paper)",
                "tuned GN at B = 2, CIFAR-100, with example weighting"),
    PaperNumber("bgn.b2", 74.60, "74.60 (survey of the paper)",
                "BGN at B = 2, CIFAR-100, with example weighting"),
)  # fmt: skip


def prepare(res: Results) -> None:
    """The setting from the run path; bn-alpha rows (from run dirs, kept in bn_alpha.csv)."""
    res.df["setting"] = res.df["run_dir"].str.split("/").str[1]
    attach_alpha_rows(res)


# ---------------------------------------------------------------- table
def _accs(res: Results, preset: str, setting: str | None = None, col: str = "test_acc") -> list:
    return list(accs(res, preset, setting, col).values())


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    s = pd.Series(xs, dtype=float)
    return float(s.mean()), float(s.std()) if len(s) > 1 else math.nan


def _beside_the_paper(res: Results) -> list[str]:
    """The survey's numbers of the paper beside our effect, its interval and its verdict."""
    lines = [
        "The paper's numbers (survey of the paper; its setting, not ours) beside our effects "
        "(per seed, paired; the claims above):",
        "",
        "| claim | paper | ours: mean effect (points) | 95% interval | seeds | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for claim in res.paper.claims:
        if claim.key not in PAPER_SAYS:
            continue
        v = claim.verdict(res)
        iv = v.interval
        shown = ("—", "—", "0") if iv is None else (
            f"{iv.mean:+.2f}",
            f"[{iv.low:+.2f}, {iv.high:+.2f}]" if math.isfinite(iv.low) else "none (one run)",
            str(iv.n),
        )  # fmt: skip
        lines.append(f"| {claim.key} | {PAPER_SAYS[claim.key][1]} | " + " | ".join(shown)
                     + f" | {v.status} |")  # fmt: skip
    return lines


def table(res: Results) -> str:
    final = res.final()
    base = _mean_sd(_accs(res, "baseline"))[0]
    lines = [
        f"# Summers & Dinneen 2020 ({res.name})",
        "",
        "| preset | setting | runs | val acc. (%) | test acc. (%) mean | sd | vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset in LABELS:
        for setting in sorted(set(final.loc[final["preset"] == preset, "setting"])):
            test = _accs(res, preset, setting)
            val = _mean_sd(_accs(res, preset, setting, "val_acc"))[0]
            m, sd = _mean_sd(test)
            lines.append(
                f"| {LABELS[preset]} | {setting} | {len(test)} | {fmt(val)} | {fmt(m)} "
                f"| {fmt(sd)} | {fmt(m - base, 2) if preset != 'baseline' else ''} |"
            )
    lines += ["", "Final epoch; sd over seeds; vs baseline: difference of the means (the "
              "claims pair seeds).", "", *_beside_the_paper(res)]  # fmt: skip
    ew = alpha_summary(res)
    lines += ["", "Inference example weighting (bn-alpha, alpha picked on validation; judged "
              "on test: a validation gain is one by construction, alpha 0 being a choice):",
              ""]  # fmt: skip
    if ew.empty:
        lines.append("no bn-alpha rows (they need the runs' checkpoints)")
    else:
        lines += ["| run | alpha | val before | val after | test before | test after |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in ew.itertuples():
            lines.append(
                f"| {r.run_dir} | {r.alpha:g} | {fmt(r.val_before)} | "
                f"{fmt(r.val_after)} | {fmt(r.test_before)} | {fmt(r.test_after)} |"
            )
    lines += [
        "",
        "The paper's tables were not at hand (papers.md sec. 3): its numbers here come from a "
        "survey of the paper and are not verified against the PDF.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures
def plot_techniques(res: Results, prefix: Path) -> object:
    """Final test accuracy of every preset/setting, one dot per seed, bar = mean."""
    final = res.final()
    if final.empty:
        return None
    groups = [(p, s) for p in LABELS
              for s in sorted(set(final.loc[final["preset"] == p, "setting"]))]  # fmt: skip
    fig = MplFigure(figsize=(max(6, 0.8 * len(groups)), 4), layout="constrained")
    ax = fig.subplots()
    for i, (preset, setting) in enumerate(groups):
        accs = _accs(res, preset, setting)
        ax.bar(i, _mean_sd(accs)[0] if accs else 0, color=f"C{list(LABELS).index(preset)}",
               alpha=0.5)  # fmt: skip
        ax.scatter([i] * len(accs), accs, color="k", s=10, zorder=3)
    ax.set_xticks(range(len(groups)), [f"{p}\n{s}" for p, s in groups], fontsize=7)
    lo = final["test_acc"].min() if final["test_acc"].notna().any() else 0
    ax.set(ylabel="final test accuracy (%)", ylim=(max(0, lo - 5), None),
           title=f"Summers & Dinneen 2020 techniques ({res.name})")  # fmt: skip
    ax.grid(alpha=0.3, axis="y")
    return save(fig, prefix, tight=True)


def plot_alpha(res: Results, prefix: Path) -> object:
    """Selection accuracy against alpha per run (bn-alpha)."""
    rows = res.extras.get("alpha")
    if rows is None or len(rows) == 0:
        return None
    fig = MplFigure(figsize=(5, 3.8), layout="constrained")
    ax = fig.subplots()
    for i, (run, sub) in enumerate(rows.groupby("run_dir", sort=True)):
        sub = sub.sort_values("alpha")
        ax.plot(sub["alpha"], sub["sel_acc"], marker="o", color=f"C{i}", label=run, lw=1)
    ax.set(xlabel="alpha", ylabel="validation accuracy (%)", title="Inference example weighting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return save(fig, prefix, tight=True)


FIGURES = (
    Figure("techniques", "Final test accuracy per technique and setting (dots: seeds, bar: "
           "mean)", plot_techniques),
    Figure("example_weighting", "Validation accuracy against the example weight alpha for each "
           "baseline and combined run (bn-alpha)", plot_alpha,
           needs_run_dirs="checkpoint.pt (bn-alpha)"),
)  # fmt: skip

PAPER = Paper(
    name="bn4things",
    title="Summers & Dinneen 2020 (Four Things about BN)",
    citation='Summers & Dinneen, "Four Things Everyone Should Know to Improve Batch '
    'Normalization", ICLR 2020 (arXiv:1906.03548); CIFAR-100 (full), CIFAR-10 (quick, medium)',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/{setting}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
)

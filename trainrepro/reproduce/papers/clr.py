"""Smith, "Cyclical Learning Rates for Training Neural Networks" (CLR, WACV 2017), CIFAR-10
(Sec. 4.1, Table 1, Figure 1): a learning rate cycling between bounds found by the LR range
test reaches the fixed rate's final accuracy in far fewer iterations.

Runs: conf/experiment/clr/<preset>.yaml, in runs/clr[-quick]/<preset>/seed<k>.
Claims: clr_claims.py (per seed, the first update at which a cyclical schedule reaches the
fixed rate's final test accuracy, over the fixed rate's updates).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import (
    Figure,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    fmt,
    unfinished_lines,
)
from trainrepro.reproduce.papers.clr_claims import CLAIMS, CYCLIC, LABELS, reach_ratios
from trainrepro.reproduce.speed import Row, ended, lines, mean_final

# [S]: transcribed from secondary notes (papers.md section 9), not checked against the PDF:
# the "paper" column only, never a threshold.
NUMBERS = (
    PaperNumber("fixed.acc", 81.4, "81.4 [S]", "Table 1, fixed lr, 70,000 iterations"),
    PaperNumber("fixed.iters", 70_000, "70,000 [S]", "Table 1"),
    PaperNumber("clr.acc", 81.4, "81.4 [S]", "Table 1, CLR (triangular2 [R])"),
    PaperNumber("clr.iters", 25_000, "25,000 [S]", "Table 1"),
)
_PAPER = {n.key: n for n in NUMBERS}

PRESETS = ("fixed", "step", "triangular", "triangular2", "exp_range")
# The claim pairs triangular with fixed: 5 seeds each; the other schedules 3.
SEEDS = {"fixed": 5, "triangular": 5, "triangular2": 3, "exp_range": 3, "step": 3}


def _runs() -> tuple[Run, ...]:
    """Seed by seed, so that a profile stopped early leaves whole seeds to pair."""
    return tuple(
        Run(f"{p}/seed{s}", p, s) for s in range(max(SEEDS.values())) for p in PRESETS
        if s < SEEDS[p]
    )  # fmt: skip


PROFILES = {
    "full": Profile("full", _runs(), note="GPU, 19 runs of 70,000 updates"),
    "quick": Profile(
        "quick",
        _runs(),
        config=("profile=clr_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 9 min wall (measured: conf/profile/clr_quick.yaml): "
        "LeNet-5 on 10,000 images, 32 epochs of 100 updates, bounds from the LR range test; "
        "fixed and triangular x 5 seeds, step, triangular2, exp_range x 3",
    ),
    "medium": Profile(
        "medium",
        _runs(),
        config=("profile=clr_medium",),
        jobs=8,
        threads=2,
        note="one GPU, 8 runs at a time, ~6 min (an estimate from issue 20's H200 measurement, "
        "not measured: conf/profile/clr_medium.yaml): LeNet-5 on all 50,000 images, 24 epochs "
        "(12,000 updates); the quick profile's runs and seeds",
    ),
}

SETTING = (
    'the paper trains Caffe\'s "CIFAR-10 full" net (three 5x5 convs of 32, 32 and 64 channels '
    "with pooling and LRN, no batch norm) on all 50,000 CIFAR-10 images at batch 100 with SGD "
    "(momentum 0.9, weight decay 0.004): a fixed lr for 70,000 iterations against CLR with "
    "bounds from the LR range test and a stepsize of 2,000 iterations (papers.md section 9; "
    "the numbers [S], the solver settings [R]). Every profile here uses LeNet-5 instead (two 5x5 "
    "convs of 6 and 16 channels, fc 120-84-10, 62k parameters, no normalization): no model of "
    "the Caffe net's shape exists in this package. The full profile keeps the rest: 140 epochs "
    "(70,000 updates), stepsize 4 epochs, exp_range's gamma 0.99994, the step decay x0.1 at "
    "epochs 120 and 130. The quick profile trains on a stratified 10,000 of the training "
    "images (all 10,000 test images) for 32 epochs (3,200 updates, four cycles of 800), bf16 on "
    "2 CPU cores, with gamma and the decay's epochs rescaled to the run's length; the medium "
    "profile on all 50,000 for 24 epochs (12,000 updates, three cycles). Accuracy is read at "
    "every epoch end, so the iterations at which a schedule reaches a level are epoch-granular."
)


def table(res: Results) -> str:
    """Per schedule: final test accuracy, updates, and when it reached the fixed rate's final
    accuracy, beside the paper's numbers."""
    final = res.final()
    ratios = {p: reach_ratios(res, p) for p in CYCLIC + ("step",)}
    lines = [
        f"# Smith 2017 (CLR) on CIFAR-10 ({res.name})",
        "",
        "| schedule | seeds | final test acc. (%) mean ± std | updates | first update at the "
        "fixed rate's final acc. (mean) | ÷ fixed's updates (mean) | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset in PRESETS:
        sub = final[(final["preset"] == preset) & (final["status"] == "completed")]
        if sub.empty:
            continue
        acc = sub["test_acc"].astype(float)
        upd = int(sub["updates"].astype(float).max())
        r = ratios.get(preset, {})
        reached = [v["at"] for v in r.values() if math.isfinite(v["at"])]
        at = "—" if not r else f"never (0/{len(r)} reached)"
        if reached:
            at = f"{sum(reached) / len(reached):,.0f} ({len(reached)}/{len(r)} reached)"
        ratio = fmt(sum(v["ratio"] for v in r.values()) / len(r)) if r else "—"
        paper = {
            "fixed": f"{_PAPER['fixed.acc'].shown} at {_PAPER['fixed.iters'].shown}",
            "triangular2": f"{_PAPER['clr.acc'].shown} at {_PAPER['clr.iters'].shown} "
            "(÷ 70,000 = 0.36)",
        }.get(preset, "—")
        std = f" ± {fmt(acc.std())}" if len(acc) > 1 else ""
        lines.append(
            f"| {LABELS[preset]} | {len(sub)} | {fmt(acc.mean())}{std} | {upd:,} | {at} | "
            f"{ratio} | {paper} |"
        )
    lines += [
        "",
        "Accuracy read at every epoch end; a run that never reaches the fixed rate's final",
        "accuracy counts one epoch past its last update. Paper numbers [S]: from secondary",
        "notes (papers.md section 9), for Caffe's CIFAR-10 full net, not LeNet-5: not targets.",
    ]
    lines += unfinished_lines(final)
    return "\n".join(lines) + "\n"


def time_to_target(res: Results) -> list[str]:
    """Every schedule against one level, the fixed rate's mean final accuracy, in updates."""
    done = ended(res)
    fixed = done.loc[(done["preset"] == "fixed") & (done["status"] == "completed"), "run_dir"]
    if fixed.empty:
        return ["No completed fixed-rate run: no target to time the schedules against."]
    target = mean_final(res, fixed)
    rows = [Row(LABELS[p], list(done.loc[done["preset"] == p, "run_dir"]), target)
            for p in PRESETS]  # fmt: skip
    why = (
        f"the fixed rate's final test accuracy, mean over its {len(fixed)} completed runs "
        f"({target:.2f}%), the level of the paper's Table 1 (one level for every seed here; "
        "the claims pair each seed with its own fixed-rate run)."
    )
    return lines(res, rows, axis="updates", why=why)


def plot_accuracy(res: Results, prefix: Path) -> object:
    """Test accuracy and lr against updates, one line per schedule (mean over seeds)."""
    df = res.df
    shown = [p for p in PRESETS if p in set(df["preset"])]
    if not shown:
        return None
    fig = MplFigure(figsize=(10, 3.8), layout="constrained")
    acc_ax, lr_ax = fig.subplots(1, 2)
    for i, preset in enumerate(shown):
        sub = df[df["preset"] == preset]
        curve = sub.groupby("updates")["test_acc"].agg(["mean", "min", "max"])
        n = sub["run_dir"].nunique()
        acc_ax.plot(curve.index, curve["mean"], color=f"C{i}", label=f"{LABELS[preset]} (n={n})")
        acc_ax.fill_between(curve.index, curve["min"], curve["max"], color=f"C{i}", alpha=0.2)
        # The lr metric is the epoch's first update's: the cycle drawn at epoch resolution.
        lr = sub.groupby("updates")["lr"].mean()
        lr_ax.plot(lr.index, lr.values, color=f"C{i}", label=LABELS[preset])
    acc_ax.set(xlabel="iterations (updates)", ylabel="test accuracy (%)")
    lr_ax.set(xlabel="iterations (updates)", ylabel="learning rate (epoch's first update)")
    for ax in (acc_ax, lr_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    fig.suptitle("CLR against a fixed rate (Smith 2017, Fig. 1); band: min–max over seeds")
    return save(fig, prefix)


FIGURES = (
    Figure("accuracy", "Figure 1: test accuracy against iterations per schedule (mean over "
           "seeds, band min–max), and each schedule's lr", plot_accuracy),
)  # fmt: skip

PAPER = Paper(
    name="clr",
    title="Smith 2017 (CLR)",
    citation='Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 '
    "(arXiv:1506.01186; CIFAR-10: Sec. 4.1, Table 1, Figure 1)",
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/seed{seed}",
    setting=SETTING,
    time_to_target=time_to_target,
)

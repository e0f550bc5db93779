"""Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (RAdam, ICLR 2020),
CIFAR-10 (Table 1, Sec. 5.2, Figures 2, 6): Adam's adaptive rate has a large variance early
on, which warmup or RAdam's rectification reduces, making training robust to the lr.

Runs: conf/experiment/radam/<preset>.yaml, in runs/radam[-quick]/<preset>[_w<W>]/lr<lr>/seed<k>.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.figures import loss_and_accuracy
from trainrepro.reproduce.paper import (
    FAIL,
    NOT_CHECKED,
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
from trainrepro.reproduce.scripts import load_script

LABELS = {  # run folder -> label; Adam with warmup's folders carry their warmup length
    "sgd": "SGD (momentum 0.9)",
    "adam": "Adam",
    "radam": "RAdam",
    "adam_warmup": "Adam, warmup 100",
    "adam_warmup_w100": "Adam, warmup 100",
    "adam_warmup_w200": "Adam, warmup 200",
    "adam_warmup_w500": "Adam, warmup 500",
    "adam_warmup_w1000": "Adam, warmup 1000",
    "adam_2k": "Adam-2k",
    "adam_eps": "Adam-eps (eps 1e-4)",
}
GRID = (0.1, 0.03, 0.01, 0.003)
HISTOGRAM_RUNS = ("adam", "adam_warmup", "radam")  # Figure 2's comparison, at lr 0.1, seed 0
DISTORTION_UPDATES = 10  # the paper: "distorted ... within 10 updates"
DISTORTION_FILE = "grad_hist_distortion.json"  # the histograms' numbers, kept beside runs.csv

# The paper's CIFAR-10 numbers (ResNet-20, 50k images, 164 epochs).
NUMBERS = (  # Table 1 has one number per optimizer (the lr it used is not stated)
    PaperNumber("sgd.best", 91.51, "91.51", "Table 1"),
    PaperNumber("adam.best", 90.54, "90.54", "Table 1"),
    PaperNumber("radam.best", 91.38, "91.38", "Table 1"),
    PaperNumber("adam_warmup.best", 91.29, "91.29", "Sec. 5.2, best over W and lr"),
    PaperNumber("radam.lr0.1", 91.06, "91.06", "Sec. 5.2"),
    PaperNumber("adam_warmup.lr0.1", 90.13, "90.13", "Sec. 5.2, W = 100"),
    PaperNumber("adam_warmup_w100.lr0.1", 90.13, "90.13", "Sec. 5.2, W = 100"),
)
_PAPER = {n.key: n for n in NUMBERS}


def _run(preset: str, lr: float, seed: int, warmup: int | None = None) -> Run:
    folder = f"{preset}_w{warmup}" if warmup else preset
    extra = (f"schedule.warmup_steps={warmup}",) if warmup else ()
    return Run(f"{folder}/lr{lr:g}/seed{seed}", preset, seed, (f"optimizer.lr={lr:g}", *extra))


PROFILES = {
    # SGD, Adam, RAdam and Adam with warmup W = 100/200/500/1000 at every lr, Adam-2k and
    # Adam-eps at lr 0.1; 3 seeds: 90 runs on one GPU.
    "full": Profile(
        "full",
        tuple(_run(p, lr, s) for p in ("sgd", "adam", "radam") for lr in GRID for s in (0, 1, 2))
        + tuple(
            _run("adam_warmup", lr, s, w)
            for w in (100, 200, 500, 1000)
            for lr in GRID
            for s in (0, 1, 2)
        )
        + tuple(_run(p, 0.1, s) for p in ("adam_2k", "adam_eps") for s in (0, 1, 2)),
        note="GPU, 90 runs",
    ),
    # Adam and RAdam over the grid with 2 seeds; the rest at lr 0.1 with 1 seed. 42 min.
    "quick": Profile(
        "quick",
        tuple(_run(p, lr, s) for p in ("adam", "radam") for lr in GRID for s in (0, 1))
        + tuple(_run(p, 0.1, 0) for p in ("sgd", "adam_warmup", "adam_2k", "adam_eps")),
        config=("profile=radam_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 26 min (measured): Adam and RAdam over the lr grid × 2 seeds, "
        "the others at lr 0.1",
    ),
}


def prepare(res: Results) -> None:
    """The grid lr of each run, and the gradient histograms' numbers (Figure 2)."""
    # The run's base lr, its place in the grid; the "lr" metric is the schedule's per epoch.
    res.df["grid_lr"] = res.df["optimizer.lr"].astype(float)
    saved = res.out / DISTORTION_FILE
    if res.run_root is not None:
        hist = {}
        for preset in HISTOGRAM_RUNS:
            run_dir = res.run_root / preset / "lr0.1" / "seed0"
            if (run_dir / "grad_hist.pt").is_file():
                hist[preset] = distortion(run_dir)
        res.extras["distortion"] = hist
        source = f"{res.run_root}/<preset>/lr0.1/seed0/grad_hist.pt"
        res.extras["distortion_source"] = source
        res.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"source": source, "runs": hist}, indent=2) + "\n")
    elif saved.is_file():  # the run dirs are gone: the numbers computed when they were there
        kept = json.loads(saved.read_text())
        res.extras["distortion"] = kept["runs"]
        res.extras["distortion_source"] = kept["source"]
        res.notes.append(
            f"Gradient-histogram numbers: kept from `{saved.name}` (source: {kept['source']}); "
            "the histograms are not in runs.csv."
        )


def distortion(run_dir: Path) -> dict[str, float]:
    """How far the median of log10|g| moves over the first updates (Figure 2's distortion)."""
    from trainrepro.instruments.grad_hist import histogram_summary

    hist = histogram_summary(run_dir / "grad_hist.pt")
    first = hist.iloc[0]
    at = hist.iloc[min(DISTORTION_UPDATES, len(hist)) - 1]
    return {
        "median_first": float(first["median"]),
        "median_at": float(at["median"]),
        "shift": float(at["median"] - first["median"]),
        "p10_shift": float(at["p10"] - first["p10"]),
        "zeros_at": float(at["zero_fraction"]),
        "zeros_last": float(hist.iloc[-1]["zero_fraction"]),
        "last_update": int(hist.iloc[-1]["update"]),
    }


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """Per (preset, lr): runs, completed runs, and final test accuracy over completed runs."""
    rows = []
    for (preset, lr), sub in final.groupby(["preset", "grid_lr"], sort=False):
        done = sub[sub["status"] == "completed"]["test_acc"].astype(float)
        rows.append(
            {
                "preset": preset,
                "lr": float(lr),
                "runs": len(sub),
                "completed": len(done),
                "diverged": int((sub["status"] == "diverged").sum()),
                "mean": done.mean() if len(done) else math.nan,
                "std": done.std() if len(done) > 1 else math.nan,
                "min": done.min() if len(done) else math.nan,
                "max": done.max() if len(done) else math.nan,
            }
        )
    order = {p: i for i, p in enumerate(LABELS)}
    return pd.DataFrame(rows).sort_values(
        ["preset", "lr"], key=lambda c: c.map(order) if c.name == "preset" else -c
    )


def table(res: Results) -> str:
    """Per preset and lr: final test accuracy over seeds, and the paper's numbers."""
    final = res.final()
    lines = [
        f"# Liu et al. 2020 (RAdam) on CIFAR-10 ({res.name})",
        "",
        "| preset | lr | seeds | final test acc. (%) mean ± std (range) | diverged |"
        " paper (%), this lr | paper (%), optimizer's best |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summarize(final).itertuples():
        acc = f"{fmt(row.mean)} ± {fmt(row.std)} ({fmt(row.min)}–{fmt(row.max)})"
        if row.completed == 1:
            acc = fmt(row.mean)
        at = _PAPER.get(f"{row.preset}.lr{row.lr:g}")
        best = _PAPER.get(re.sub(r"_w\d+$", "", row.preset) + ".best")
        lines.append(
            f"| {LABELS.get(row.preset, row.preset)} | {row.lr:g} | {row.completed}/{row.runs} "
            f"| {acc} | {row.diverged} | {f'{at.shown} ({at.source})' if at else '—'} "
            f"| {f'{best.shown} ({best.source})' if best else '—'} |"
        )
    lines += [
        "",
        "Accuracy: the last epoch's, over completed runs. Paper numbers: Table 1 and Sec. 5.2",
        "(ResNet-20, all 50k images, 164 epochs); Table 1 does not say at which lr of the grid.",
        "Adam-2k and Adam-eps appear in the paper only for a Transformer (Sec. 3.1).",
    ]
    unfinished = sorted(final.loc[~final["status"].isin(["completed", "diverged"]), "run_dir"])
    if unfinished:
        lines += ["", "Unfinished runs: " + ", ".join(unfinished)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- claims
def grid_spread(summary: pd.DataFrame, preset: str) -> tuple[float, int]:
    """Max minus min over the lr grid of the mean final accuracy, and how many lrs it covers."""
    means = summary[(summary["preset"] == preset) & summary["lr"].isin(GRID)]["mean"].dropna()
    return (means.max() - means.min() if len(means) else math.nan), len(means)


def check_lr_robustness(res: Results) -> Verdict:
    summary = summarize(res.final())
    (sa, na), (sr, nr) = grid_spread(summary, "adam"), grid_spread(summary, "radam")
    if not na == nr == len(GRID):
        return Verdict(NOT_CHECKED, f"not every lr has runs (Adam {na}, RAdam {nr} of 4)")
    detail = (
        f"spread of the final accuracy over the lr grid {list(GRID)} (max − min of the means): "
        f"RAdam {sr:.2f} points, Adam {sa:.2f} (RAdam's must be smaller)"
    )
    return Verdict(PASS if sr < sa else FAIL, detail, {"radam": sr, "adam": sa})


def check_distortion(res: Results) -> Verdict:
    hist = res.extras.get("distortion", {})
    if len(hist) != len(HISTOGRAM_RUNS):
        missing = ", ".join(p for p in HISTOGRAM_RUNS if p not in hist)
        return Verdict(NOT_CHECKED, f"grad_hist.pt missing (lr 0.1, seed 0): {missing}")
    a, others = hist["adam"], [hist[p] for p in HISTOGRAM_RUNS[1:]]
    detail = ", ".join(
        f"{LABELS[p]} {h['shift']:+.2f} (from {h['median_first']:.2f} to"
        f" {h['median_at']:.2f}; 10th percentile {h['p10_shift']:+.2f}; exactly zero:"
        f" {100 * h['zeros_at']:.0f}% of entries at update {DISTORTION_UPDATES},"
        f" {100 * h['zeros_last']:.0f}% at update {h['last_update']})"
        for p, h in hist.items()
    )
    detail = (
        f"lr 0.1, seed 0: change of the median log10|g| (over nonzero entries) from update 1 to "
        f"update {DISTORTION_UPDATES}: {detail}. Source: {res.extras['distortion_source']}"
    )
    ok = all(a["shift"] < o["shift"] for o in others)
    return Verdict(PASS if ok else FAIL, detail, {p: h["shift"] for p, h in hist.items()})


CLAIMS = (
    Claim(
        "lr_robustness",
        "RAdam is more robust to the choice of learning rate than Adam",
        "Sec. 5.1, Fig. 6",
        "RAdam's spread of the mean final test accuracy over the lr grid is smaller than Adam's",
        check_lr_robustness,
    ),
    Claim(
        "gradient_distortion",
        "Without warmup, Adam's gradient distribution is distorted towards small values within "
        "the first updates; warmup (and RAdam) avoid it",
        "Sec. 3.1, Fig. 2",
        f"from update 1 to {DISTORTION_UPDATES}, the median log10|g| of Adam moves further "
        "down than that of Adam with warmup and of RAdam",
        check_distortion,
    ),
)


# ---------------------------------------------------------------- figures
def plot_robustness(res: Results, prefix: Path) -> object:
    """Figure 6: per optimizer, test accuracy per epoch at each lr (mean over seeds)."""
    df = res.df
    shown = [p for p in ("sgd", "adam", "radam") if p in set(df["preset"])]
    if not shown:
        return None
    fig = MplFigure(figsize=(4.2 * len(shown), 3.6), layout="constrained")
    axes = fig.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for ax, preset in zip(axes, shown, strict=True):
        sub = df[df["preset"] == preset]
        for i, lr in enumerate(GRID):
            runs = sub[sub["grid_lr"] == lr]
            if runs.empty:
                continue
            curve = runs.groupby("epoch")["test_acc"].agg(["mean", "min", "max"])
            ax.plot(curve.index, curve["mean"], color=f"C{i}", label=f"lr {lr:g}")
            ax.fill_between(curve.index, curve["min"], curve["max"], color=f"C{i}", alpha=0.2)
        ax.set(title=LABELS[preset], xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Learning-rate robustness (Liu et al. 2020, Fig. 6); band: min–max over seeds")
    return save(fig, prefix, tight=True)


def plot_presets(res: Results, prefix: Path, lr: float = 0.1) -> object:
    """Training loss and test accuracy per epoch of every preset at one lr."""
    sub = res.df[res.df["grid_lr"] == lr]
    title = f"Every optimizer at lr {lr:g} (mean over seeds)"
    return loss_and_accuracy(sub, LABELS, title, prefix)


def plot_histograms(res: Results, prefix: Path) -> object:
    """Figure 2's picture from the runs' grad_hist.pt (scripts/plot_grad_hist.py)."""
    assert res.run_root is not None
    dirs = [res.run_root / p / "lr0.1" / "seed0" for p in HISTOGRAM_RUNS]
    dirs = [d for d in dirs if (d / "grad_hist.pt").is_file()]
    if not dirs:
        return None
    titles = [LABELS[d.parent.parent.name] for d in dirs]
    return load_script("plot_grad_hist").plot_heatmaps(dirs, titles, prefix)


def plot_rectification(res: Results, prefix: Path) -> object:
    """RAdam's r_t and rho_t against the step (no runs needed)."""
    from trainrepro.optim.adaptive import RHO_THRESHOLD

    return load_script("plot_rectification").plot([0.99, 0.999], 5000, RHO_THRESHOLD, str(prefix))


FIGURES = (
    Figure("lr_robustness", "Figure 6: test accuracy per epoch at every lr of the grid, one "
           "panel per optimizer (mean over seeds, band min–max)", plot_robustness),
    Figure("curves", "Training loss and test accuracy per epoch of every preset at lr 0.1",
           plot_presets),
    Figure("grad_hist", "Figure 2: histogram of log10|g| over the first updates (x: update; "
           "colour: fraction of entries), Adam, Adam with warmup and RAdam at lr 0.1, seed 0",
           plot_histograms, needs_run_dirs="grad_hist.pt"),
    Figure("rectification", "RAdam's rectification term r_t and degrees of freedom rho_t "
           "(Algorithm 2) against the update step", plot_rectification),
)  # fmt: skip

PAPER = Paper(
    name="radam",
    title="Liu et al. 2020 (RAdam)",
    citation='Liu, Jiang, He, Chen, Liu, Gao & Han, "On the Variance of the Adaptive Learning '
    'Rate and Beyond", ICLR 2020 (CIFAR-10: Table 1, Sec. 5.2, Figures 2, 6)',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/lr{lr:g}/seed{seed}",
    prepare=prepare,
)

"""Figures and table of Liu et al. (ICLR 2020), "On the Variance of the Adaptive Learning Rate
and Beyond" (RAdam), from the runs of `make reproduce-radam`
(runs/radam[-quick]/<preset>[_w<warmup>]/lr<lr>/seed<k>).

    python scripts/radam_report.py runs/radam-quick --out results/radam-quick

Writes into --out: lr_robustness.{png,pdf} (Figure 6: test accuracy per epoch at every lr of
the grid, one panel per optimizer, mean over seeds), curves.{png,pdf} (training loss and test
accuracy per epoch of every preset at lr 0.1), grad_hist.{png,pdf} (Figure 2's picture: the
histogram of log10|g| over the first updates, for Adam, Adam with warmup and RAdam at lr 0.1,
seed 0), rectification.{png,pdf} (r_t and rho_t against the step), table.md (per preset and lr:
final test accuracy as mean, std and range over seeds, the paper's numbers beside them, and
the acceptance checks) and runs.csv (every run's metrics per epoch).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

try:
    from trainrepro.adaptive import RHO_THRESHOLD
    from trainrepro.analysis import collect
    from trainrepro.errors import ConfigError
    from trainrepro.grad_hist import histogram_summary
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.adaptive import RHO_THRESHOLD
    from trainrepro.analysis import collect
    from trainrepro.errors import ConfigError
    from trainrepro.grad_hist import histogram_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_grad_hist import plot_heatmaps  # noqa: E402
from plot_rectification import plot as plot_rectification  # noqa: E402

PRESETS = {  # run folder -> label; Adam with warmup's folders carry their warmup length
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
# The paper's CIFAR-10 numbers (ResNet-20, 50k images, 164 epochs): (where, accuracy %).
PAPER_BEST = {  # Table 1, one number per optimizer (the lr it used is not stated)
    "sgd": ("Table 1", 91.51),
    "adam": ("Table 1", 90.54),
    "radam": ("Table 1", 91.38),
    "adam_warmup": ("Sec. 5.2, best over W and lr", 91.29),
}
PAPER_AT = {  # (preset, lr): Sec. 5.2, lr 0.1
    ("radam", 0.1): ("Sec. 5.2", 91.06),
    ("adam_warmup", 0.1): ("Sec. 5.2, W = 100", 90.13),
    ("adam_warmup_w100", 0.1): ("Sec. 5.2, W = 100", 90.13),
}
DISTORTION_UPDATES = 10  # the paper: "distorted ... within 10 updates"


def load(root: Path) -> pd.DataFrame:
    """Every run under ``root`` with its preset folder and lr as columns."""
    df = collect([root])
    rel = df["run_dir"].map(lambda d: Path(d).relative_to(root).parts)
    bad = [d for d, parts in zip(df["run_dir"], rel, strict=True) if len(parts) != 3]
    if bad:
        raise ConfigError("runs", bad[0], "expected <preset>/lr<lr>/seed<k> under the root")
    df["preset"] = rel.map(lambda parts: parts[0])
    df["lr"] = df["optimizer.lr"].astype(float)
    return df


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last epoch, with status."""
    last = df.sort_values("epoch").drop_duplicates("run_dir", keep="last")
    return last.set_index("run_dir")


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """Per (preset, lr): runs, completed runs, and final test accuracy over completed runs."""
    rows = []
    for (preset, lr), sub in final.groupby(["preset", "lr"], sort=False):
        done = sub[sub["status"] == "completed"]["test_acc"].astype(float)
        rows.append(
            {
                "preset": preset,
                "lr": lr,
                "runs": len(sub),
                "completed": len(done),
                "diverged": int((sub["status"] == "diverged").sum()),
                "mean": done.mean() if len(done) else math.nan,
                "std": done.std() if len(done) > 1 else math.nan,
                "min": done.min() if len(done) else math.nan,
                "max": done.max() if len(done) else math.nan,
            }
        )
    order = {p: i for i, p in enumerate(PRESETS)}
    out = pd.DataFrame(rows)
    return out.sort_values(
        ["preset", "lr"], key=lambda c: c.map(order) if c.name == "preset" else -c
    )


def grid_spread(summary: pd.DataFrame, preset: str) -> tuple[float, int]:
    """Max minus min over the lr grid of the mean final accuracy, and how many lrs it covers."""
    means = summary[(summary["preset"] == preset) & summary["lr"].isin(GRID)]["mean"].dropna()
    return (means.max() - means.min() if len(means) else math.nan), len(means)


def distortion(run_dir: Path) -> dict[str, float]:
    """How far the median of log10|g| moves over the first updates (Figure 2's distortion)."""
    hist = histogram_summary(run_dir / "grad_hist.pt")
    first = hist.iloc[0]
    at = hist.iloc[min(DISTORTION_UPDATES, len(hist)) - 1]
    return {
        "median_first": first["median"],
        "median_at": at["median"],
        "shift": at["median"] - first["median"],
        "p10_shift": at["p10"] - first["p10"],
        "zeros_at": at["zero_fraction"],
        "zeros_last": hist.iloc[-1]["zero_fraction"],
        "last_update": int(hist.iloc[-1]["update"]),
    }


def _fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table_md(name: str, summary: pd.DataFrame, hist: dict[str, dict], unfinished: list) -> str:
    lines = [
        f"# Liu et al. 2020 (RAdam) on CIFAR-10 ({name})",
        "",
        "| preset | lr | seeds | final test acc. (%) mean ± std (range) | diverged |"
        " paper (%), this lr | paper (%), optimizer's best |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        label = PRESETS.get(row.preset, row.preset)
        acc = f"{_fmt(row.mean)} ± {_fmt(row.std)} ({_fmt(row.min)}–{_fmt(row.max)})"
        if row.completed == 1:
            acc = _fmt(row.mean)
        at = PAPER_AT.get((row.preset, row.lr))
        best = PAPER_BEST.get(re.sub(r"_w\d+$", "", row.preset))
        lines.append(
            f"| {label} | {row.lr:g} | {row.completed}/{row.runs} | {acc} | {row.diverged} | "
            f"{f'{at[1]} ({at[0]})' if at else '—'} | {f'{best[1]} ({best[0]})' if best else '—'} |"
        )
    lines += [
        "",
        "Accuracy: the last epoch's, over completed runs. Paper numbers: Table 1 and Sec. 5.2",
        "(ResNet-20, all 50k images, 164 epochs); Table 1 does not say at which lr of the grid.",
        "Adam-2k and Adam-eps appear in the paper only for a Transformer (Sec. 3.1).",
        "",
        "## Acceptance",
        "",
    ]
    spreads = {p: grid_spread(summary, p) for p in ("adam", "radam")}
    (sa, na), (sr, nr) = spreads["adam"], spreads["radam"]
    if na == nr == len(GRID):
        verdict = "**pass**" if sr < sa else "**fail**"
        lines.append(
            f"- spread of the final accuracy over the lr grid {list(GRID)} (max − min of the"
            f" means): RAdam {sr:.2f} points, Adam {sa:.2f} (RAdam's must be smaller): {verdict}"
        )
    else:
        lines.append(f"- lr-grid spread: not every lr has runs (Adam {na}, RAdam {nr} of 4)")
    if len(hist) == len(HISTOGRAM_RUNS):
        a, others = hist["adam"], [hist[p] for p in HISTOGRAM_RUNS[1:]]
        verdict = "**pass**" if all(a["shift"] < o["shift"] for o in others) else "**fail**"
        detail = ", ".join(
            f"{PRESETS[p]} {h['shift']:+.2f} (from {h['median_first']:.2f} to"
            f" {h['median_at']:.2f}; 10th percentile {h['p10_shift']:+.2f}; exactly zero:"
            f" {100 * h['zeros_at']:.0f}% of entries at update {DISTORTION_UPDATES},"
            f" {100 * h['zeros_last']:.0f}% at update {h['last_update']})"
            for p, h in hist.items()
        )
        lines.append(
            f"- gradient histograms, lr 0.1, seed 0: change of the median log10|g| (over nonzero"
            f" entries) from update 1"
            f" to update {DISTORTION_UPDATES}: {detail}. Adam without warmup's distribution must"
            f" move further towards small values than both others: {verdict}"
        )
    else:
        lines.append("- gradient histograms: runs missing (" + ", ".join(HISTOGRAM_RUNS) + ")")
    if unfinished:
        lines += ["", "Unfinished runs: " + ", ".join(unfinished)]
    return "\n".join(lines) + "\n"


def _save(fig: Figure, out: Path, name: str) -> None:
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}", dpi=150, bbox_inches="tight")


def plot_robustness(df: pd.DataFrame, out: Path) -> None:
    """Figure 6: per optimizer, test accuracy per epoch at each lr (mean over seeds)."""
    panels = [p for p in ("sgd", "adam", "radam") if p in set(df["preset"])]
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, preset in zip(axes, panels, strict=True):
        sub = df[df["preset"] == preset]
        for i, lr in enumerate(GRID):
            runs = sub[sub["lr"] == lr]
            if runs.empty:
                continue
            curve = runs.groupby("epoch")["test_acc"].agg(["mean", "min", "max"])
            color = f"C{i}"
            ax.plot(curve.index, curve["mean"], color=color, label=f"lr {lr:g}")
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2)
        ax.set(title=PRESETS[preset], xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Learning-rate robustness (Liu et al. 2020, Fig. 6); band: min–max over seeds")
    _save(fig, out, "lr_robustness")


def plot_presets(df: pd.DataFrame, out: Path, lr: float = 0.1) -> None:
    """Training loss and test accuracy per epoch of every preset at one lr."""
    sub = df[df["lr"] == lr]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, preset in enumerate(p for p in PRESETS if p in set(sub["preset"])):
        runs = sub[sub["preset"] == preset]
        for ax, metric in zip(axes, ("train_loss", "test_acc"), strict=True):
            curve = runs.groupby("epoch")[metric].mean()
            ax.plot(curve.index, curve.values, color=f"C{i}", label=PRESETS[preset])
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Every optimizer at lr {lr:g} (mean over seeds)")
    _save(fig, out, "curves")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="runs/radam or runs/radam-quick")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        df = load(args.root)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    final = final_rows(df)
    unfinished = sorted(
        str(Path(d).relative_to(args.root))
        for d in final.index
        if final.loc[d, "status"] not in ("completed", "diverged")
    )
    summary = summarize(final)
    hist = {}
    for preset in HISTOGRAM_RUNS:
        run_dir = args.root / preset / "lr0.1" / "seed0"
        if (run_dir / "grad_hist.pt").is_file():
            hist[preset] = distortion(run_dir)
    (args.out / "table.md").write_text(table_md(args.root.name, summary, hist, unfinished))
    df.to_csv(args.out / "runs.csv", index=False)
    plot_robustness(df, args.out)
    plot_presets(df, args.out)
    if hist:
        dirs = [args.root / p / "lr0.1" / "seed0" for p in hist]
        plot_heatmaps(dirs, [PRESETS[p] for p in hist], args.out / "grad_hist")
    plot_rectification([0.99, 0.999], 5000, RHO_THRESHOLD, str(args.out / "rectification"))
    print(f"wrote {args.out}/table.md and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

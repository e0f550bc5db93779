"""Figures and table of Smith et al. (ICLR 2018), "Don't Decay the Learning Rate, Increase the
Batch Size", from the runs of `make reproduce-smith18` (runs/smith18[-quick]/<preset>/seed<k>).

    python scripts/smith18_report.py runs/smith18-quick --out results/smith18-quick

Writes into --out: schedules.{png,pdf} (Figure 1, plus the Figure 5 runs), train_loss.{png,pdf}
(Figure 2), test_acc_per_epoch.{png,pdf} and test_acc_per_update.{png,pdf} (Figures 3-5; one
panel per optimizer, mean over seeds, shaded min-max), table.md: per preset the updates, the
final test accuracy as mean, std and range over seeds, and the paper's numbers beside them,
then the acceptance checks, and runs.csv, every run's metrics per epoch. Presets without runs
are left out; unfinished runs are listed.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

try:
    from trainrepro.analysis import KNOWN_METRICS, aggregate_curves, collect
    from trainrepro.errors import ConfigError
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.analysis import KNOWN_METRICS, aggregate_curves, collect
    from trainrepro.errors import ConfigError

SCHEDULES = ("decay_lr", "hybrid", "increase_batch")
OPTIMIZERS = {  # preset prefix -> (label, figure panel of the paper)
    "momentum": ("SGD with momentum", "Fig. 3a"),
    "nesterov": ("Nesterov momentum", "Fig. 3b"),
    "sgd": ("vanilla SGD", "Fig. 4a"),
    "adam": ("Adam", "Fig. 4b"),
}
FIG5 = (  # (preset, the paper's label); the original schedule is the momentum decay_lr run
    ("momentum_decay_lr", "Original training schedule"),
    ("fig5_increase_batch", "Increasing batch size"),
    ("fig5_increased_lr", "Increased initial learning rate"),
    ("fig5_increased_momentum", "Increased momentum coefficient"),
)
# The numbers the paper states in its text (Sec. 5.2, Fig. 5), all at full scale (WRN-16-4,
# 50k images, 200 epochs); its other CIFAR-10 curves are given only as figures.
PAPER = {
    "momentum_decay_lr": ("~80,000", 80_000, 94.3),
    "fig5_increase_batch": ("~29,000", 29_000, 94.4),
    "fig5_increased_lr": ("<6,500", 6_500, 94.5),
    "fig5_increased_momentum": ("<2,500", 2_500, 93.3),
}
COLORS = {  # the paper's colours: blue original, green hybrid, red increasing batch
    "decay_lr": "tab:blue",
    "hybrid": "tab:green",
    "increase_batch": "tab:red",
    "fig5_increase_batch": "tab:red",
    "fig5_increased_lr": "tab:orange",
    "fig5_increased_momentum": "tab:purple",
}
CIFAR10_TRAIN = 50_000  # the full profile trains on all of it
# Acceptance (the issue, for the main schedules, SGD with momentum)
MAX_ACC_GAP = 2.0  # points between the three schedules' mean final test accuracies
MAX_UPDATE_RATIO = 0.45  # increase_batch updates / decay_lr updates


def label(preset: str, fig5: bool = False) -> str:
    """The curve's name: its schedule, or the paper's label in Figure 5."""
    for name, paper_label in FIG5 if fig5 else FIG5[1:]:
        if preset == name:
            return paper_label
    return preset.split("_", 1)[1] if "_" in preset else preset


def color(preset: str) -> str:
    return COLORS.get(preset, COLORS.get(preset.split("_", 1)[-1], "tab:gray"))


def panels(x: str) -> list[tuple[str, list[str], str]]:
    """(title, presets, x) per panel: one per optimizer (Figs. 3-4), then Figure 5."""
    out = [
        (f"{name} ({fig})", [f"{prefix}_{s}" for s in SCHEDULES], x)
        for prefix, (name, fig) in OPTIMIZERS.items()
    ]
    out.append(("Fig. 5: fewer updates", [p for p, _ in FIG5], x))
    return out


def load(root: Path) -> pd.DataFrame:
    """Every run under ``root`` with its ``preset`` (the folder below root)."""
    df = collect([root])
    rel = df["run_dir"].map(lambda d: Path(d).resolve().relative_to(root.resolve()).parts)
    if (rel.map(len) < 2).any():
        bad = df.loc[rel.map(len) < 2, "run_dir"].iloc[0]
        raise ConfigError("runs", bad, f"expected {root}/<preset>/seed<k>/ run directories")
    df["preset"] = rel.map(lambda parts: parts[0])
    return df.drop_duplicates(["run_dir", "epoch"], keep="last")


def curves(df: pd.DataFrame, x: str, metric: str) -> dict[str, pd.DataFrame]:
    """Per preset: mean/min/max of ``metric`` over its runs at each epoch, against mean ``x``."""
    agg = aggregate_curves(df, x=x, metrics=[metric], group_by=["preset"])
    return {
        str(g).removeprefix("preset="): part.sort_values("epoch")
        for g, part in agg.groupby("group", sort=False)
    }


def plot_panels(
    df: pd.DataFrame, specs: list[tuple[str, list[str], str]], metric: str, out: Path, title: str
) -> list[Path]:
    """One panel per (title, presets, x) spec with runs; x = updates is drawn on a log scale."""
    data = {x: curves(df, x, metric) for x in {x for _, _, x in specs}}
    shown = [(t, [p for p in ps if p in data[x]], x) for t, ps, x in specs]
    shown = [(t, ps, x) for t, ps, x in shown if ps]
    if not shown:
        return []
    ncols = min(len(shown), 3)
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, presets, x) in zip(axes, shown, strict=False):
        for preset in presets:
            c, runs = data[x][preset], int(data[x][preset]["runs"].iloc[0])
            name = label(preset, fig5=panel.startswith("Fig. 5"))
            name = f"{name} (n={runs})" if runs > 1 else name
            ax.plot(c["x"], c["mean"], color=color(preset), lw=1.4, label=name)
            if runs > 1:
                ax.fill_between(c["x"], c["min"], c["max"], color=color(preset), alpha=0.2, lw=0)
        if x == "updates":  # the runs differ by up to 40x in updates
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if metric == "train_loss":
            ax.set_yscale("log")
        ax.set_title(panel, fontsize="medium")
        ax.set_xlabel("parameter updates (log scale)" if x == "updates" else x)
        names = {"test_acc": "test accuracy (%)", "train_loss": "training cross-entropy"}
        ax.set_ylabel(names.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\nline: mean over seeds; shaded: min-max", fontsize="medium")
    return _save(fig, out)


def plot_schedules(df: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """Figure 1 (lr and batch size per epoch, Sec. 5.1) and the Figure 5 runs, with the noise
    scale g = lr/(1-m)(N/B-1) each schedule follows, from the runs' own metrics."""
    rows = [
        ("Sec. 5.1 schedules (Fig. 1)", [f"momentum_{s}" for s in SCHEDULES]),
        ("Fig. 5 schedules", [p for p, _ in FIG5]),
    ]
    rows = [(t, [p for p in ps if p in set(df["preset"])]) for t, ps in rows]
    rows = [(t, ps) for t, ps in rows if ps]
    if not rows:
        return []
    fig = Figure(figsize=(14, 3.4 * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    columns = (
        ("lr", "learning rate"),
        ("batch_size", "batch size"),
        ("noise_scale", "noise scale g"),
    )
    for (row_title, presets), row_axes in zip(rows, axes, strict=True):
        for ax, (col, name) in zip(row_axes, columns, strict=True):
            for preset in presets:
                run = df[df["preset"] == preset]
                run = run[run["run_dir"] == run["run_dir"].iloc[0]].sort_values("epoch")
                # Epoch e's value holds from e-1 to e: steps from 0, not ramps from 1.
                xs, ys = [0, *run["epoch"]], [run[col].iloc[0], *run[col]]
                curve = label(preset, fig5=row_title.startswith("Fig. 5"))
                ax.step(xs, ys, where="pre", color=color(preset), label=curve)
            ax.set_yscale("log")
            ax.set_title(f"{row_title}: {name}", fontsize="medium")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3, which="both")
        row_axes[0].legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return _save(fig, out)


def _save(fig: Figure, out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for path in paths:
        # No creation date: a regenerated figure is byte-identical when its data are.
        meta = {"CreationDate": None} if path.suffix == ".pdf" else {}
        fig.savefig(path, dpi=150, metadata=meta)
    return paths


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per preset: seeds, updates, final test accuracy over its completed runs."""
    last = df.sort_values("epoch").groupby("run_dir", sort=False).tail(1)
    epochs = df.groupby("run_dir")["epochs"].first() if "epochs" in df else None
    rows = []
    for preset, runs in last.groupby("preset", sort=False):
        done = runs[runs["status"] == "completed"]
        acc = done["test_acc"]
        unfinished = [
            f"{Path(r.run_dir).name} ({r.status}, epoch {r.epoch}"
            + (f"/{epochs[r.run_dir]}" if epochs is not None else "")
            + ")"
            for r in runs.itertuples()
            if r.status != "completed"
        ]
        rows.append(
            {
                "preset": preset,
                "seeds": len(done),
                "updates": int(done["updates"].max()) if len(done) else None,
                "acc_mean": acc.mean() if len(acc) else math.nan,
                "acc_std": acc.std() if len(acc) > 1 else math.nan,
                "acc_min": acc.min() if len(acc) else math.nan,
                "acc_max": acc.max() if len(acc) else math.nan,
                "unfinished": ", ".join(unfinished),
            }
        )
    return pd.DataFrame(rows).set_index("preset") if rows else pd.DataFrame()


def _order(presets: Sequence[str]) -> list[str]:
    known = [p for _, ps, _ in panels("epoch") for p in ps]
    first = list(dict.fromkeys(p for p in known if p in presets))
    return first + sorted(set(presets) - set(first))


def _acc(row: pd.Series) -> str:
    if not row["seeds"]:
        return "—"
    text = f"{row['acc_mean']:.2f}"
    if row["seeds"] > 1:
        text += f" ± {row['acc_std']:.2f} ({row['acc_min']:.2f}–{row['acc_max']:.2f})"
    return text


def planned_full_updates(preset: str) -> int | None:
    """Updates of the preset at full scale, from its config alone (no data, no training)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from torch import nn

    from trainrepro.build import epoch_batch_sizes, make_schedule
    from trainrepro.cli import CONF_DIR
    from trainrepro.config import instantiate

    if not (CONF_DIR / "experiment" / "smith18" / f"{preset}.yaml").is_file():
        return None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment=smith18/{preset}"])
    GlobalHydra.instance().clear()
    schedule = make_schedule(cfg, instantiate("optimizer", cfg.optimizer, nn.Linear(1, 1)))
    n_train = cfg.dataset.train_size or CIFAR10_TRAIN
    return sum(n_train // b for b in epoch_batch_sizes(schedule, cfg.epochs, n_train))


def _known(value: object) -> bool:
    """A count that is there: not None/NaN (no completed run) and not 0."""
    return value is not None and not pd.isna(value) and bool(value)


def _reference(preset: str) -> str:
    """The run whose updates a preset is compared with: its optimizer's decay_lr run."""
    prefix = preset.split("_", 1)[0]
    return "momentum_decay_lr" if prefix == "fig5" else f"{prefix}_decay_lr"


def acceptance(summary: pd.DataFrame) -> list[str]:
    """The issue's checks on the main schedules (SGD with momentum), as table lines."""
    main = [f"momentum_{s}" for s in SCHEDULES]
    if not all(p in summary.index and summary.loc[p, "seeds"] for p in main):
        return ["- not checked: the three momentum schedules have no completed runs yet"]
    means = summary.loc[main, "acc_mean"]
    gap = float(means.max() - means.min())
    ratio = (
        summary.loc["momentum_increase_batch", "updates"]
        / summary.loc["momentum_decay_lr", "updates"]
    )
    ok_gap, ok_ratio = gap <= MAX_ACC_GAP, ratio <= MAX_UPDATE_RATIO
    lines = [
        f"- final test accuracy, max − min of the three schedules' means: {gap:.2f} points "
        f"(needs ≤ {MAX_ACC_GAP:g}): **{'pass' if ok_gap else 'FAIL'}**",
        f"- updates, increase_batch ÷ decay_lr: {ratio:.3f} (needs ≤ {MAX_UPDATE_RATIO:g}; "
        f"paper ~29,000 ÷ ~80,000 ≈ 0.36): **{'pass' if ok_ratio else 'FAIL'}**",
    ]
    for prefix, (name, _) in list(OPTIMIZERS.items())[1:]:
        others = [f"{prefix}_{s}" for s in SCHEDULES]
        if all(p in summary.index and summary.loc[p, "seeds"] for p in others):
            spread = summary.loc[others, "acc_mean"]
            lines.append(
                f"- {name} (not an acceptance check): the three schedules' means lie within "
                f"{float(spread.max() - spread.min()):.2f} points"
            )
    return lines


def write_table(summary: pd.DataFrame, out: Path, title: str) -> Path:
    head = (
        "| preset | curve | seeds | updates | ÷ decay_lr | final test acc. (%) mean ± std (range) "
        "| full-scale plan | paper updates | ÷ original | paper acc. (%) |"
    )
    lines = [f"# {title}", "", head, "|" + "---|" * 10]
    unfinished = []
    for preset in _order(list(summary.index)):
        row = summary.loc[preset]
        ref = _reference(preset)
        ratio, ref_updates = "—", summary["updates"].get(ref)
        if _known(row["updates"]) and _known(ref_updates):
            ratio = f"{row['updates'] / ref_updates:.3f}"
        paper_updates, paper_n, paper_acc = PAPER.get(preset, ("figure only", None, None))
        paper_ratio = f"{paper_n / PAPER['momentum_decay_lr'][1]:.3f}" if paper_n else "—"
        updates = f"{int(row['updates']):,}" if _known(row["updates"]) else "—"
        full = planned_full_updates(preset)
        lines.append(
            f"| {preset} | {label(preset)} | {int(row['seeds'])} | {updates} | {ratio} "
            f"| {_acc(row)} | {f'{full:,}' if full else '—'} | {paper_updates} | {paper_ratio} "
            f"| {paper_acc if paper_acc is not None else '—'} |"
        )
        if row["unfinished"]:
            unfinished.append(f"- {preset}: {row['unfinished']}")
    lines += [
        "",
        "Updates: parameter updates of one run (the same for every seed; floor(N/B) per epoch). "
        "Full-scale plan: the preset's updates without the quick profile (WRN-16-4, 50k images, "
        "200 epochs), counted from its schedule. "
        "÷ decay_lr: against the same optimizer's decay_lr run (Figure 5 runs: against "
        "momentum_decay_lr, the paper's original schedule). Accuracy: the last epoch's, over "
        "completed runs only. Paper numbers: Sec. 5.2 / Figure 5 (WRN-16-4, all 50k images, "
        "200 epochs); the other curves are given in the paper only as figures.",
        "",
        "## Acceptance (SGD with momentum, the three schedules)",
        "",
        *acceptance(summary),
    ]
    if unfinished:
        lines += ["", "## Unfinished runs (left out of the accuracies)", "", *unfinished]
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_metrics_table(df: pd.DataFrame, out: Path) -> Path:
    """Every run's per-epoch metrics in one CSV, so the figures can be redrawn from results/."""
    seed = df["seed"] if "seed" in df else None
    keep = ["preset", *(["seed"] if seed is not None else []), "status"]
    metrics = [c for c in df.columns if c in KNOWN_METRICS or c == "train_seconds"]
    path = out / "runs.csv"
    df[keep + metrics].sort_values(keep[:-1] + ["epoch"]).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="runs/smith18 or runs/smith18-quick")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--title", default=None, help="figure/table title prefix")
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, *_a, **_k: print(f"warning: {msg}", file=sys.stderr)
    title = args.title or f"Smith et al. 2018 on CIFAR-10 ({args.runs.name})"
    try:
        df = load(args.runs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main_runs = [f"momentum_{s}" for s in SCHEDULES]
    written = [
        *plot_schedules(df, args.out / "schedules", f"{title}: schedules"),
        *plot_panels(
            df,
            [
                ("per epoch (Fig. 2a)", main_runs, "epoch"),
                ("per update (Fig. 2b)", main_runs, "updates"),
            ],
            "train_loss",
            args.out / "train_loss",
            f"{title}: training cross-entropy, SGD with momentum",
        ),
        *plot_panels(
            df, panels("epoch"), "test_acc", args.out / "test_acc_per_epoch",
            f"{title}: test accuracy per epoch (Figs. 3, 4, 5a)",
        ),
        *plot_panels(
            df, panels("updates"), "test_acc", args.out / "test_acc_per_update",
            f"{title}: test accuracy per parameter update (Figs. 3, 4, 5b)",
        ),
        write_table(summarize(df), args.out, title),
        write_metrics_table(df, args.out),
    ]  # fmt: skip
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of the Smith et al. (2018) reproduction (Figures 1-5), from the runs' metrics:
the schedules, the training loss and the test accuracy per epoch and per update."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullFormatter

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Results

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

MAIN = tuple(f"momentum_{s}" for s in SCHEDULES)
COLORS = {  # the paper's colours: blue original, green hybrid, red increasing batch
    "decay_lr": "tab:blue",
    "hybrid": "tab:green",
    "increase_batch": "tab:red",
    "fig5_increase_batch": "tab:red",
    "fig5_increased_lr": "tab:orange",
    "fig5_increased_momentum": "tab:purple",
}


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


def _curves(df: pd.DataFrame, x: str, metric: str) -> dict[str, pd.DataFrame]:
    """Per preset: mean/min/max of ``metric`` over its runs at each epoch, against mean ``x``."""
    from trainrepro.analysis.curves import aggregate_curves

    agg = aggregate_curves(df, x=x, metrics=[metric], group_by=["preset"])
    return {
        str(g).removeprefix("preset="): part.sort_values("epoch")
        for g, part in agg.groupby("group", sort=False)
    }


def plot_panels(
    df: pd.DataFrame, specs: list[tuple[str, list[str], str]], metric: str, title: str
) -> MplFigure | None:
    """One panel per (title, presets, x) spec with runs; x = updates is drawn on a log scale."""
    data = {x: _curves(df, x, metric) for x in {x for _, _, x in specs}}
    shown = [(t, [p for p in ps if p in data[x]], x) for t, ps, x in specs]
    shown = [(t, ps, x) for t, ps, x in shown if ps]
    if not shown:
        return None
    ncols = min(len(shown), 3)
    nrows = math.ceil(len(shown) / ncols)
    fig = MplFigure(figsize=(5.0 * ncols, 3.6 * nrows + 0.8), layout="constrained")
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
    return fig


def plot_schedules(res: Results, prefix: Path) -> object:
    """Figure 1 (lr and batch size per epoch, Sec. 5.1) and the Figure 5 runs, with the noise
    scale g = lr/(1-m)(N/B-1) each schedule follows, from the runs' own metrics."""
    df = res.df
    rows = [("Sec. 5.1 schedules (Fig. 1)", list(MAIN)), ("Fig. 5 schedules", [p for p, _ in FIG5])]
    rows = [(t, [p for p in ps if p in set(df["preset"])]) for t, ps in rows]
    rows = [(t, ps) for t, ps in rows if ps]
    if not rows:
        return None
    fig = MplFigure(figsize=(14, 3.4 * len(rows) + 0.8), layout="constrained")
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
    fig.suptitle(f"Smith et al. 2018 on CIFAR-10 ({res.name}): schedules", fontsize="medium")
    return save(fig, prefix)


def _panels_figure(specs_of, metric: str, what: str):
    def draw(res: Results, prefix: Path) -> object:
        fig = plot_panels(
            res.df, specs_of(), metric, f"Smith et al. 2018 on CIFAR-10 ({res.name}): {what}"
        )
        return save(fig, prefix) if fig is not None else None

    return draw


FIGURES = (
    Figure("schedules", "Figure 1 (Sec. 5.1): learning rate, batch size and noise scale per "
           "epoch of the three schedules, and of the Figure 5 runs", plot_schedules),
    Figure("train_loss", "Figure 2: training cross-entropy of SGD with momentum, per epoch and "
           "per update", _panels_figure(
               lambda: [("per epoch (Fig. 2a)", list(MAIN), "epoch"),
                        ("per update (Fig. 2b)", list(MAIN), "updates")],
               "train_loss", "training cross-entropy, SGD with momentum")),
    Figure("test_acc_per_epoch", "Figures 3, 4, 5a: test accuracy per epoch, one panel per "
           "optimizer (mean over seeds, shaded min-max)", _panels_figure(
               lambda: panels("epoch"), "test_acc", "test accuracy per epoch (Figs. 3, 4, 5a)")),
    Figure("test_acc_per_update", "Figures 3, 4, 5b: test accuracy per parameter update "
           "(log scale)", _panels_figure(
               lambda: panels("updates"), "test_acc",
               "test accuracy per parameter update (Figs. 3, 4, 5b)")),
)  # fmt: skip

"""Figures of the Liu et al. (2020) reproduction (Figures 2 and 6), and the names the
declaration, the claims and the figures share: the run folders' labels, the lr grid and the
runs whose gradient histograms are compared."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.figures import loss_and_accuracy
from trainrepro.reproduce.paper import Figure, Results
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
HISTOGRAM_LR = 0.1  # Figure 2's comparison runs at the grid's largest lr
# Figure 2's runs, and the folders that hold them: the quick profile runs Adam with warmup in
# adam_warmup/ (the preset's W = 100), the full profile in adam_warmup_w<W>/.
HISTOGRAM_RUNS = {
    "adam": ("adam",),
    "adam_warmup": ("adam_warmup", "adam_warmup_w100"),
    "radam": ("radam",),
}


def histogram_dir(root: Path, preset: str, seed: int = 0) -> Path | None:
    """The run directory of one of Figure 2's runs that holds a grad_hist.pt, if any."""
    for folder in HISTOGRAM_RUNS[preset]:
        run_dir = root / folder / f"lr{HISTOGRAM_LR:g}" / f"seed{seed}"
        if (run_dir / "grad_hist.pt").is_file():
            return run_dir
    return None


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
            seeds = runs["run_dir"].nunique()
            ax.plot(curve.index, curve["mean"], color=f"C{i}", label=f"lr {lr:g} (n={seeds})")
            ax.fill_between(curve.index, curve["min"], curve["max"], color=f"C{i}", alpha=0.2)
        ax.set(title=LABELS[preset], xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle("Learning-rate robustness (Liu et al. 2020, Fig. 6); band: min–max over seeds")
    return save(fig, prefix, tight=True)


def plot_presets(res: Results, prefix: Path, lr: float = 0.1) -> object:
    """Training loss and test accuracy per epoch of every preset at one lr."""
    sub = res.df[res.df["grid_lr"] == lr]
    title = f"Every optimizer at lr {lr:g} (mean over seeds)"
    return loss_and_accuracy(sub, LABELS, title, prefix)


def plot_histograms(res: Results, prefix: Path) -> object:
    """Figure 2's picture from the seed-0 runs' grad_hist.pt (scripts/plot_grad_hist.py)."""
    assert res.run_root is not None
    found = [(p, histogram_dir(res.run_root, p)) for p in HISTOGRAM_RUNS]
    found = [(p, d) for p, d in found if d is not None]
    if not found:
        return None
    titles = [LABELS[p] for p, _ in found]
    return load_script("plot_grad_hist").plot_heatmaps([d for _, d in found], titles, prefix)


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

"""Plot the gradient histograms of runs trained with +callbacks=grad_hist, side by side.

    python scripts/plot_grad_hist.py runs/adam runs/radam --titles Adam RAdam \\
        --out results/radam/grad_hist

One heat map per run, as Liu et al. 2020 (Fig. 2) stack histograms of |g| over updates:
x the update, y log10|g|, colour the fraction of the update's gradient entries in each bin
(log colour scale, shared by all panels); the white line is the median over nonzero entries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

try:
    from trainrepro.errors import ConfigError
    from trainrepro.instruments.grad_hist import FILE_NAME, histogram_summary, load_histogram
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.errors import ConfigError
    from trainrepro.instruments.grad_hist import FILE_NAME, histogram_summary, load_histogram


def _fractions(hist: dict) -> np.ndarray:
    """[bins, updates]: each bin's share of all the update's entries (zeros and NaN included)."""
    counts = hist["counts"].numpy().astype(np.float64)
    entries = counts.sum(1) + sum(hist[k].numpy() for k in ("zeros", "below", "above", "nan"))
    return (counts / np.maximum(entries, 1)[:, None]).T


def plot_heatmaps(run_dirs: list[Path], titles: list[str] | None, out: Path) -> list[Path]:
    """Write ``out``.png and ``out``.pdf; ConfigError names a run dir without grad_hist.pt."""
    titles = titles or [Path(d).name for d in run_dirs]
    if len(titles) != len(run_dirs):
        raise ConfigError("--titles", titles, f"needs one title per run dir ({len(run_dirs)})")
    hists, medians = [], []
    for run_dir in run_dirs:
        path = Path(run_dir) / FILE_NAME
        if not path.is_file():
            raise ConfigError(
                "run_dir", run_dir, f"no {FILE_NAME}; train with +callbacks=grad_hist"
            )
        hist = load_histogram(path)
        if len(hist["updates"]) == 0:
            raise ConfigError("run_dir", run_dir, f"its {FILE_NAME} holds no update yet")
        hists.append(hist)
        medians.append(histogram_summary(path))
    fractions = [_fractions(h) for h in hists]
    positive = np.concatenate([f[f > 0] for f in fractions])
    # One colour scale for every panel, so the runs compare by colour.
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None

    fig, axes = plt.subplots(
        1, len(hists), figsize=(4.2 * len(hists) + 1.0, 3.6), squeeze=False, sharey=True
    )
    mesh = None
    for ax, hist, frac, summary, title in zip(
        axes[0], hists, fractions, medians, titles, strict=True
    ):
        updates = hist["updates"].numpy()
        x = np.append(updates - 0.5, updates[-1] + 0.5)  # cell edges around each update
        shown = np.ma.masked_equal(frac, 0.0)  # empty bins stay blank, as LogNorm can't show 0
        mesh = ax.pcolormesh(
            x, hist["edges"].numpy(), shown, norm=norm, cmap="viridis", rasterized=True
        )
        median = summary["median"].replace([np.inf, -np.inf], np.nan)
        ax.plot(summary["update"], median, color="white", lw=1.0, label="median")
        ax.set_title(title)
        ax.set_xlabel("update")
    axes[0][0].set_ylabel(r"$\log_{10} |g|$")
    if mesh is not None and norm is not None:
        fig.colorbar(mesh, ax=axes[0].tolist(), label="fraction of entries")
    out = Path(out)
    if out.suffix.lower() in (".png", ".pdf"):  # as plot_curves.py: a prefix, not a file name
        out = out.with_suffix("")
    paths = [out.parent / f"{out.name}.png", out.parent / f"{out.name}.pdf"]
    out.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs holding grad_hist.pt")
    parser.add_argument("--out", required=True, type=Path, help="output path; writes .png and .pdf")
    parser.add_argument("--titles", nargs="+", help="one per run dir (default: the dir names)")
    args = parser.parse_args(argv)
    try:
        paths = plot_heatmaps(args.runs, args.titles, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(args.runs)} runs -> " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

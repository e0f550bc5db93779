"""Plot RAdam's rectification term r_t and degrees of freedom rho_t against the update step.

Liu et al. (2020), "On the Variance of the Adaptive Learning Rate and Beyond", Algorithm 2:
RAdam takes un-adapted momentum steps while rho_t <= the threshold (marked; 5 in torch and
the authors' code, 4 in the paper's text) and Adam steps scaled by r_t after.

    python scripts/plot_rectification.py --out results/radam/rectification
    python scripts/plot_rectification.py --beta2 0.999 --beta2 0.9999 --steps 50000 --out x
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: renders without a display (Agg canvas)

try:
    from trainrepro.optim.adaptive import PAPER_RHO_THRESHOLD, RHO_THRESHOLD, rectification, rho
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.optim.adaptive import PAPER_RHO_THRESHOLD, RHO_THRESHOLD, rectification, rho

DEFAULT_BETA2 = (0.99, 0.995, 0.999)


def curves(
    beta2: float, steps: int, threshold: float
) -> tuple[list[int], list[float], list[float | None]]:
    """Steps 1..steps, rho_t at each, and r_t (None while rho_t <= threshold)."""
    ts = list(range(1, steps + 1))
    return ts, [rho(t, beta2) for t in ts], [rectification(t, beta2, threshold) for t in ts]


def plot(betas: list[float], steps: int, threshold: float, out: str) -> list[Path]:
    """Two panels, r_t and rho_t on a log step axis; writes ``out``.png and ``out``.pdf."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_r, ax_rho = fig.subplots(1, 2)
    for i, beta2 in enumerate(betas):
        color = f"C{i}"
        ts, rhos, rs = curves(beta2, steps, threshold)
        first = next((t for t, r in zip(ts, rs, strict=True) if r is not None), None)
        ax_r.plot(
            [t for t, r in zip(ts, rs, strict=True) if r is not None],
            [r for r in rs if r is not None],
            color=color,
            label=f"beta2={beta2:g}" + (f" (first rectified step {first})" if first else ""),
        )
        if first is not None:
            ax_r.plot([first], [rs[first - 1]], "o", color=color, ms=4)
        ax_rho.plot(
            ts, rhos, color=color, label=f"beta2={beta2:g}, rho_inf={2 / (1 - beta2) - 1:g}"
        )
    ax_rho.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    if threshold != PAPER_RHO_THRESHOLD:
        ax_rho.axhline(PAPER_RHO_THRESHOLD, color="k", ls=":", lw=1, label="paper's text: 4")
    ax_r.set_title("rectification term r_t (momentum steps before the dot)")
    ax_r.set_ylabel("r_t")
    ax_r.set_ylim(0, 1.05)
    ax_rho.set_title("degrees of freedom rho_t")
    ax_rho.set_ylabel("rho_t")
    ax_rho.set_yscale("log")
    for ax in (ax_r, ax_rho):
        ax.set_xscale("log")
        ax.set_xlim(1, steps)
        ax.set_xlabel("update step t")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    fig.suptitle("RAdam (Liu et al. 2020, Algorithm 2)", fontsize="medium")
    paths = [Path(f"{out}.png"), Path(f"{out}.pdf")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        meta = {"CreationDate": None} if path.suffix == ".pdf" else {}
        fig.savefig(path, dpi=150, metadata=meta)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--beta2",
        type=float,
        action="append",
        help=f"second-moment decay, repeatable (default: {', '.join(map(str, DEFAULT_BETA2))})",
    )
    parser.add_argument("--steps", type=int, default=10000, help="last update step (>= 2)")
    parser.add_argument(
        "--threshold", type=float, default=RHO_THRESHOLD, help="rho_t threshold (>= 4)"
    )
    parser.add_argument("--out", required=True, help="output prefix; writes .png and .pdf")
    args = parser.parse_args(argv)
    betas = args.beta2 or list(DEFAULT_BETA2)
    if args.steps < 2:
        parser.error("--steps must be >= 2")
    if args.threshold < PAPER_RHO_THRESHOLD:
        parser.error("--threshold must be >= 4")
    if not all(0.0 < b < 1.0 for b in betas):
        parser.error("--beta2 must be in (0, 1)")
    paths = plot(betas, args.steps, args.threshold, args.out)
    print(" ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

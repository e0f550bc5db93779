"""The figure of ``trainrepro lr-find`` (trainrepro.analysis.lr_find): loss and batch accuracy
against the lr, raw and smoothed, with the suggestions marked; as PNG bytes, drawn on matplotlib's
Agg canvas (no pyplot, no display)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# One colour and line style per suggestion: loss-based solid, accuracy-based (the paper's) dashed.
MARKS = {
    ("loss", "steepest"): ("C1", "-"),
    ("loss", "min_loss/10"): ("C2", "-"),
    ("accuracy", "base_lr"): ("C3", "--"),
    ("accuracy", "max_lr"): ("C4", "--"),
}


def plot_png(
    rows: Sequence[Mapping[str, float]],
    suggestions: Mapping[str, Mapping[str, Mapping[str, Any]]],
    mode: str,
    title: str,
) -> bytes:
    """Two panels sharing the lr axis (log in exp mode): loss above, accuracy below."""
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    lrs = [r["lr"] for r in rows]
    for ax, raw, smoothed, label in (
        (top, "loss", "smoothed_loss", "training loss"),
        (bottom, "acc", "smoothed_acc", "batch accuracy (%)"),
    ):
        ax.plot(lrs, [r[raw] for r in rows], color="0.75", lw=0.8, label="per batch")
        ax.plot(lrs, [r[smoothed] for r in rows], color="C0", lw=1.6, label="smoothed")
        ax.set(ylabel=label)
        ax.grid(alpha=0.3)
    finite = [r["smoothed_loss"] for r in rows if math.isfinite(r["smoothed_loss"])]
    if finite:  # the smoothed loss up to its minimum; the climb after it would flatten that
        low, high = min(finite), max(finite[: finite.index(min(finite)) + 1])
        span = max(high - low, 0.01 * abs(high), 1e-6)
        top.set_ylim(low - 0.1 * span, high + 0.5 * span)
    for (group, key), (color, style) in MARKS.items():
        lr = suggestions.get(group, {}).get(key, {}).get("lr")
        if lr is None:
            continue
        for ax in (top, bottom):
            label = f"{key} {lr:.2g}" if ax is top else None
            ax.axvline(lr, color=color, ls=style, lw=1.2, label=label)
    top.legend(fontsize=7, loc="upper left")
    bottom.legend(fontsize=7, loc="upper left")
    bottom.set(xlabel="learning rate" + (" (log scale)" if mode == "exp" else ""))
    if mode == "exp":
        bottom.set_xscale("log")
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()

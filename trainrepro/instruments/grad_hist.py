"""Histograms of absolute gradient values over the first updates (Liu et al. 2020, Fig. 2).

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020), plot
histograms of |g| on a log scale, stacked over the first updates, to show that without warmup
Adam's early steps push the gradients towards zero. ``GradHistogram`` records those
histograms: at each of the first ``updates`` updates, one row of counts of log10|g| over every
gradient entry of the chosen parameters, in ``bins`` fixed bins between ``log10_min`` and
``log10_max``, plus the entries that are exactly zero, below or above the range, or NaN.

The counting runs on the gradients' device without a host sync (rows are brought to the host
at epoch ends), and compares |g| in float64 with the bin edges 10**e, so a row is exact and a
resumed run reproduces it bit for bit. ``grad_hist.pt`` in the run dir is rewritten at each
epoch end and at the end of the run; ``histogram_summary`` reads it into per-update quantiles.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from trainrepro.engine.distributed import is_main
from trainrepro.engine.records import atomic_torch_save
from trainrepro.engine.run import Callback
from trainrepro.errors import ConfigError, check_int, check_number

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

KEY = "callbacks.grad_hist"
FILE_NAME = "grad_hist.pt"
# Entries compared per kernel: bounds the float64 and index temporaries (32 MiB each).
CHUNK = 1 << 22
EXTRA = ("zeros", "below", "above", "nan")  # slots after the bins in each recorded row


class GradHistogram(Callback):
    """Record a histogram of log10|g| at each of the first ``updates`` updates."""

    def __init__(
        self,
        names: list[str],
        *,
        updates: int,
        bins: int,
        log10_min: float,
        log10_max: float,
        config: dict[str, Any],
    ) -> None:
        self.names = names
        self.updates = updates
        self.bins = bins
        self.config = config
        self.edges = torch.linspace(log10_min, log10_max, bins + 1, dtype=torch.float64)
        self.run_dir: Path | None = None
        self._params: list[torch.nn.Parameter] = []
        self._thresholds = torch.pow(10.0, self.edges)  # |g| >= 10**e  <=>  log10|g| >= e
        # Rows already on the host (update numbers and counts), then this epoch's device rows.
        self._done_updates: list[int] = []
        self._done = torch.zeros(0, bins + len(EXTRA), dtype=torch.int64)
        self._pending: list[tuple[int, torch.Tensor]] = []

    def start(self, run: Run, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        params = dict(run.model.named_parameters())
        self._params = [params[name] for name in self.names]
        self._thresholds = self._thresholds.to(run.device)

    def after_backward(self, run: Run, update: int) -> None:
        if update > self.updates:
            return
        self._pending.append((update, self.count([p.grad for p in self._params])))

    def count(self, grads: list[torch.Tensor | None]) -> torch.Tensor:
        """One row: counts per bin, then zeros, below, above and NaN, on the grads' device."""
        grads = [g.detach().reshape(-1) for g in grads if g is not None]
        device = grads[0].device if grads else self._thresholds.device
        row = torch.zeros(self.bins + len(EXTRA), dtype=torch.int64, device=device)
        if not grads:
            return row
        thresholds = self._thresholds.to(device)
        zeros, below, above, nan = (self.bins + i for i in range(len(EXTRA)))
        for chunk in torch.cat(grads).split(CHUNK):
            x = chunk.abs().double()  # exact for fp32/bf16/fp16 gradients
            j = torch.bucketize(x, thresholds, right=True)  # thresholds[j-1] <= x < thresholds[j]
            slot = j - 1
            slot = torch.where(j == 0, below, slot)
            slot = torch.where(j > self.bins, above, slot)
            slot = torch.where(x == thresholds[-1], self.bins - 1, slot)  # last bin is closed
            slot = torch.where(x == 0, zeros, slot)
            slot = torch.where(torch.isnan(x), nan, slot)
            row.scatter_add_(0, slot, torch.ones_like(slot))
        return row

    def _flush(self) -> None:
        """Bring this epoch's rows to the host: one sync per epoch, not per update."""
        if self._pending:
            rows = torch.stack([row for _, row in self._pending]).cpu()
            self._done = torch.cat([self._done, rows])
            self._done_updates += [update for update, _ in self._pending]
            self._pending = []

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        self._save()

    def finish(self, run_dir: Path, status: str) -> None:
        self.run_dir = Path(run_dir)
        self._save()

    def _save(self) -> None:
        if self.run_dir is not None and is_main():  # under torchrun, rank 0 writes
            atomic_torch_save(self.result(), self.run_dir / FILE_NAME)

    def result(self) -> dict[str, Any]:
        """What ``grad_hist.pt`` holds (the rows recorded so far)."""
        self._flush()
        extra = {name: self._done[:, self.bins + i].clone() for i, name in enumerate(EXTRA)}
        return {
            "updates": torch.tensor(self._done_updates, dtype=torch.int64),
            "edges": self.edges.clone(),
            "counts": self._done[:, : self.bins].clone(),
            **extra,
            "params": list(self.names),
            "config": dict(self.config),
        }

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"updates": list(self._done_updates), "rows": self._done.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._done_updates = list(state["updates"])
        self._done = state["rows"].clone()
        self._pending = []


def grad_hist(
    model: torch.nn.Module,
    *,
    updates: int = 500,
    bins: int = 100,
    log10_min: float = -12.0,
    log10_max: float = 0.0,
    params: list[str] | None = None,
) -> GradHistogram:
    """Builder for ``conf/callbacks/grad_hist.yaml``; checks every value against ``model``."""
    check_int(f"{KEY}.updates", updates, low=1)
    check_int(f"{KEY}.bins", bins, low=1)
    low = check_number(f"{KEY}.log10_min", log10_min)
    high = check_number(f"{KEY}.log10_max", log10_max)
    if low >= high:
        raise ConfigError(f"{KEY}.log10_min", log10_min, f"must be < log10_max={log10_max}")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise ConfigError(f"{KEY}.params", params, "must be a list of fnmatch patterns or null")
        for pattern in params:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
                raise ConfigError(
                    f"{KEY}.params", pattern, f"matches no parameter (names: {shown})"
                )
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in params)]
    config = {
        "updates": updates,
        "bins": bins,
        "log10_min": low,
        "log10_max": high,
        "params": params,
    }
    return GradHistogram(
        names, updates=updates, bins=bins, log10_min=low, log10_max=high, config=config
    )


def load_histogram(path: Path) -> dict[str, Any]:
    """Read a ``grad_hist.pt`` (plain tensors, lists and numbers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def histogram_summary(path: Path) -> pd.DataFrame:
    """Per recorded update: ``entries``, the fractions of them zero, below and above the range
    (``zero_fraction`` ...), and ``p10``/``median``/``p90`` of log10|g| over nonzero entries.

    Percentiles interpolate linearly within a bin; one that falls among the entries below
    (above) the range is -inf (+inf), as only its side is known.
    """
    hist = load_histogram(Path(path))
    edges = hist["edges"].numpy()
    counts = hist["counts"].numpy().astype(np.float64)
    rows = []
    for i, update in enumerate(hist["updates"].tolist()):
        below, above = float(hist["below"][i]), float(hist["above"][i])
        zeros, nan = float(hist["zeros"][i]), float(hist["nan"][i])
        entries = counts[i].sum() + below + above + zeros + nan
        row: dict[str, Any] = {
            "update": update,
            "entries": int(entries),
            "zero_fraction": zeros / entries if entries else float("nan"),
            "below_fraction": below / entries if entries else float("nan"),
            "above_fraction": above / entries if entries else float("nan"),
        }
        for q, name in ((0.1, "p10"), (0.5, "median"), (0.9, "p90")):
            row[name] = _quantile(edges, counts[i], below, above, q)
        rows.append(row)
    fractions = ["zero_fraction", "below_fraction", "above_fraction"]
    return pd.DataFrame(rows, columns=["update", "entries", *fractions, "p10", "median", "p90"])


def _quantile(edges: np.ndarray, counts: np.ndarray, below: float, above: float, q: float) -> float:
    """Quantile ``q`` of the nonzero entries, binned as ``below``, ``counts``, ``above``."""
    total = below + counts.sum() + above
    if total == 0:
        return float("nan")
    rank = q * total
    cum = below + np.concatenate([[0.0], np.cumsum(counts)])  # entries below each edge
    if rank < cum[0]:
        return float("-inf")
    if rank > cum[-1]:
        return float("inf")
    k = int(np.searchsorted(cum, rank, side="left"))  # first edge with cum[k] >= rank
    if k == 0:
        return float(edges[0])
    # cum[k-1] < rank <= cum[k], so bin k-1 holds entries: interpolate inside it.
    share = (rank - cum[k - 1]) / (cum[k] - cum[k - 1])
    return float(edges[k - 1] + share * (edges[k] - edges[k - 1]))

"""The number a run hands to a Hydra sweeper that reads job results (Optuna: ``hparams_search``).

It is the last epoch's accuracy, in percent as ``metrics.csv`` has it: ``val_acc`` when the run
holds out a validation split, else ``test_acc``. The last epoch rather than the best: those are
the weights the run leaves, ``trainrepro cv`` selects on the last epoch too, and the best of a
noisy validation curve would favour noisy settings. A diverged run gets 0.0, the worst accuracy
there is, so the sampler learns that region is bad; NaN would make Optuna fail the trial, which
its samplers then ignore.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from trainrepro.engine.lifecycle import read_summary

WORST = 0.0


def objective(run_dir: Path) -> tuple[float, str]:
    """(value, one line saying what it is) for the run in ``run_dir``."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    metric = "val_acc" if last.get("val_acc") else "test_acc"
    summary = read_summary(run_dir)
    if summary.get("status") == "diverged":
        at = summary.get("diverged_at_update")
        return WORST, f"{metric}={WORST:g} (diverged at update {at}: the worst accuracy)"
    value = float(last[metric])
    if not math.isfinite(value):
        return WORST, f"{metric}={WORST:g} ({metric} was {value}: the worst accuracy)"
    return value, f"{metric}={value:.6g} (final, epoch {last['epoch']})"

"""Sharpness of the small- and large-batch SGD solutions (Keskar et al. 2017; Li et al. 2018),
measured so that it can be compared across runs: along several filter-normalized random
directions per run, the rise of the training loss at ±``RADIUS``, relative to the loss at the
solution itself. A large-batch run that ends at a higher loss rises more in absolute terms for
the same curvature; divided by its own loss, what is left is the shape.

The numbers need the runs' checkpoints: computed when the run directories are there (every
training seed that has both the smallest- and the largest-batch SGD run), kept in
``sharpness.json`` beside runs.csv with each checkpoint's SHA-256, so a report from runs.csv
alone reads them and a re-run recomputes them. The directions are those of
scripts/plot_landscape.py (``random_direction``), which also draws the figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainrepro.reproduce.data import file_digest
from trainrepro.reproduce.scripts import load_script

SHARPNESS_FILE = "sharpness.json"
DIRECTION_SEEDS = (0, 1, 2, 3, 4)  # five filter-normalized directions per run
RADIUS = 0.5  # the landscape figure's ±0.5
SAMPLES = 2000  # training images the loss is averaged over (the landscape figure's)


def relative_rise(losses: tuple[float, float, float]) -> float:
    """(mean of the loss at -r and +r, minus the loss at 0) / the loss at 0."""
    minus, at, plus = losses
    return ((minus + plus) / 2 - at) / at


def run_sharpness(
    run_dir: Path,
    seeds: tuple[int, ...] = DIRECTION_SEEDS,
    radius: float = RADIUS,
    samples: int = SAMPLES,
) -> list[float]:
    """The relative rise along each direction seed, around ``run_dir``'s checkpoint."""
    landscape = load_script("plot_landscape")
    run, state = landscape.load_run(run_dir)
    train = landscape.probe(run, run.data.train, samples)
    alphas = np.array([-radius, 0.0, radius])
    out = []
    for seed in seeds:
        curve = landscape.random_direction(run, state, alphas, train, seed)
        out.append(relative_rise(tuple(curve["train_loss"])))
    return out


def compute(
    run_root: Path, pairs: dict[int, tuple[str, str]], saved: Path, batches: tuple[int, int]
) -> dict[str, Any]:
    """Per training seed, the small- and large-batch runs' relative rises (``pairs``: seed ->
    (small run dir, large run dir) under ``run_root``); rows whose checkpoints are unchanged
    since ``saved`` was written are kept from it."""
    old = json.loads(saved.read_text()) if saved.is_file() else {}
    same = (old.get("directions") == list(DIRECTION_SEEDS) and old.get("radius") == RADIUS
            and old.get("samples") == SAMPLES)  # fmt: skip
    rows: dict[str, Any] = {}
    for seed, dirs in sorted(pairs.items()):
        digests = [file_digest(run_root / d / "checkpoint.pt") for d in dirs]
        prev = old.get("seeds", {}).get(str(seed), {})
        if same and prev.get("sha256") == digests and prev.get("runs") == list(dirs):
            rows[str(seed)] = prev
            continue
        small, large = (run_sharpness(run_root / d) for d in dirs)
        rows[str(seed)] = {"runs": list(dirs), "sha256": digests, "small": small, "large": large}
    data = {"batches": list(batches), "directions": list(DIRECTION_SEEDS), "radius": RADIUS,
            "samples": SAMPLES, "seeds": rows}  # fmt: skip
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(data, indent=1) + "\n")
    return data


def per_seed(data: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Training seed -> (mean relative rise of the small-batch run, of the large-batch run)
    over the directions; seeds with a non-finite value are left out."""
    out = {}
    for seed, row in data.get("seeds", {}).items():
        small, large = float(np.mean(row["small"])), float(np.mean(row["large"]))
        if math.isfinite(small) and math.isfinite(large):
            out[int(seed)] = (small, large)
    return out


def committed_numbers(landscape: dict[str, Any] | None) -> str:
    """The single-direction numbers of landscape.json (seed 0), absolute and relative."""
    if not landscape:
        return "no landscape.json either"
    parts = []
    for run, b in zip(landscape["runs"], landscape.get("batches", ("A", "B")), strict=False):
        curve = landscape["directions"][run]
        alphas, losses = np.array(curve["alpha"]), np.array(curve["train_loss"])
        at = [int(np.argmin(np.abs(alphas - r))) for r in (-RADIUS, 0.0, RADIUS)]
        rel = relative_rise(tuple(float(losses[i]) for i in at))
        parts.append(f"B={b}: rise {landscape['sharpness'][run]:.3f} from a loss of "
                     f"{losses[at[1]]:.3f}, relative {rel:.3f}")  # fmt: skip
    return (f"landscape.json (the seed-0 runs, one direction, direction seed "
            f"{landscape.get('seed', 0)}, ±{RADIUS:g}): " + "; ".join(parts))  # fmt: skip

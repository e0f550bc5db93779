"""Sharp vs flat minima: the loss around two trained runs (a small- and a large-batch one).

Left: the 1-D linear interpolation theta(a) = (1 - a) theta_A + a theta_B, a in [-0.5, 1.5]
(Keskar et al. 2017, "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
Minima", Fig. 3, after Goodfellow et al. 2015), training loss and test accuracy. Right: the
loss along one random filter-normalized direction per run (Li et al. 2018, "Visualizing the
Loss Landscape of Neural Nets", Sec. 4): d ~ N(0, I) rescaled so each filter d_i has the norm
of the filter w_i it perturbs; tensors with ndim <= 1 (biases, norm parameters) get d = 0, as
in Li et al.

Losses and accuracies are over ``--samples`` images of each split, drawn once in the run's
fixed-seed shuffled order without augmentation (a class-balanced sample in expectation: the image
folders are stored class by class), the model in eval mode. Along the interpolation the batch
norm statistics are recomputed at every point from those training images (train mode,
cumulative average), ends included: interpolating the running variances themselves goes
negative past the ends (NaN losses), and averaged statistics do not belong to the averaged
weights anyway. A point whose loss is not finite is recorded as NaN, accuracy included.

    python scripts/plot_landscape.py runs/largebatch-quick/sgd/b32/seed0 \
        runs/largebatch-quick/sgd/b2048/seed0 --out results/landscape
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from trainrepro.data.loader import make_loader
from trainrepro.engine.build import build_run
from trainrepro.engine.checkpoint import load_checkpoint, restore_model
from trainrepro.errors import ConfigError

State = dict[str, torch.Tensor]


def load_run(run_dir: Path) -> tuple[Any, State]:
    """The run's model (and data) built from its config.yaml, with its checkpoint's weights."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.device = "cpu"
    cfg.compile = False
    run = build_run(cfg)
    path = run_dir / "checkpoint.pt"
    restore_model(run.model, load_checkpoint(path)["model"], path)
    return run, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


Batch = tuple[torch.Tensor, torch.Tensor]
CHUNK = 256  # images per forward pass


def probe(run: Any, split: Any, samples: int) -> Batch:
    """``samples`` unaugmented images of ``split``, the first of a seeded (0) shuffle."""
    loader = make_loader(split, mean=run.data.mean, std=run.data.std, device="cpu",
                         augment=None, seed=0)  # fmt: skip
    x, y = next(iter(loader.batches(0, min(samples, len(split.labels)), drop_last=False)))
    return x, y


@torch.no_grad()
def loss_and_acc(model: torch.nn.Module, data: Batch) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) over ``data``; both NaN if the loss is not finite."""
    model.eval()
    loss, correct = 0.0, 0
    for x, y in zip(*(t.split(CHUNK) for t in data), strict=True):
        logits = model(x)
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    if not np.isfinite(loss):
        return float("nan"), float("nan")
    return loss / len(data[1]), 100.0 * correct / len(data[1])


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Every batch norm's running statistics from ``x`` (train mode, momentum None: the
    cumulative average over passes of a size every ghost batch size divides)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    ghost = math.lcm(*(getattr(m, "ghost_batch_size", None) or 1 for m in norms))
    if len(x) < ghost:
        raise ConfigError("--samples", len(x), f"must be at least the ghost batch size {ghost}")
    size = ghost * max(1, min(CHUNK, len(x)) // ghost)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(x) - size + 1, size):
        model(x[start : start + size])
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def _set(run: Any, state: State) -> None:
    run.model.load_state_dict(state)


def interpolation(
    run: Any, a: State, b: State, alphas: np.ndarray, train: Batch, test: Batch
) -> dict[str, list[float]]:
    """Train loss and test accuracy at (1 - alpha) a + alpha b, batch norm statistics
    recomputed from ``train`` at each point (integer counters taken from ``a``)."""
    out: dict[str, list[float]] = {"alpha": alphas.tolist(), "train_loss": [], "test_acc": []}
    for alpha in alphas:
        mixed = {
            k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v for k, v in a.items()
        }
        _set(run, mixed)
        recompute_batch_norm(run.model, train[0])
        out["train_loss"].append(loss_and_acc(run.model, train)[0])
        out["test_acc"].append(loss_and_acc(run.model, test)[1])
    return out


def filter_normalized_direction(model: torch.nn.Module, seed: int) -> State:
    """Li et al. (2018), Sec. 4: per filter (slice along dim 0) ||d_i|| = ||w_i||; 0 for
    parameters with ndim <= 1."""
    gen = torch.Generator().manual_seed(seed)
    direction = {}
    for name, p in model.named_parameters():
        if p.ndim <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=gen)
        w_norm = p.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1).clamp(min=1e-12)
        direction[name] = d * (w_norm / d_norm).view(-1, *[1] * (p.ndim - 1))
    return direction


def random_direction(
    run: Any, state: State, alphas: np.ndarray, train: Batch, seed: int
) -> dict[str, list[float]]:
    """Train loss at theta + alpha d, d filter-normalized."""
    _set(run, state)
    d = filter_normalized_direction(run.model, seed)
    losses = []
    for alpha in alphas:
        moved = dict(state)
        for name, v in d.items():
            moved[name] = state[name] + alpha * v
        _set(run, moved)
        losses.append(loss_and_acc(run.model, train)[0])
    return {"alpha": alphas.tolist(), "train_loss": losses}


def sharpness(curve: dict[str, list[float]], radius: float = 0.5) -> float:
    """Mean rise of the loss from alpha 0 to alpha +-radius (nearest grid points)."""
    alphas, losses = np.array(curve["alpha"]), np.array(curve["train_loss"])
    at = [int(np.argmin(np.abs(alphas - r))) for r in (-radius, 0.0, radius)]
    return float((losses[at[0]] + losses[at[2]]) / 2 - losses[at[1]])


def landscape(
    run_a: Path, run_b: Path, *, points: int = 21, samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Every number the figure shows, as plain lists (also written as JSON)."""
    run, a = load_run(run_a)
    run_other, b = load_run(run_b)
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        raise ConfigError("runs", f"{run_a} {run_b}", "hold different models; cannot interpolate")
    train, test = probe(run, run.data.train, samples), probe(run, run.data.test, samples)
    inter = interpolation(run, a, b, np.linspace(-0.5, 1.5, points), train, test)
    radial = np.linspace(-1.0, 1.0, points)
    curves = {
        str(run_a): random_direction(run, a, radial, train, seed),
        str(run_b): random_direction(run_other, b, radial, train, seed),
    }
    return {
        "runs": [str(run_a), str(run_b)],
        "samples": samples,
        "seed": seed,
        "interpolation": inter,
        "directions": curves,
        "sharpness": {k: sharpness(c) for k, c in curves.items()},
    }


def plot(data: dict[str, Any], prefix: Path, titles: list[str] | None = None) -> list[Path]:
    """Two panels: the interpolation, and each run's random-direction loss; PNG + PDF."""
    names = titles or [Path(r).as_posix() for r in data["runs"]]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    inter = data["interpolation"]
    left.plot(inter["alpha"], inter["train_loss"], color="C0", label="train loss")
    left.set(xlabel=f"alpha (0: {names[0]}, 1: {names[1]})", ylabel="train loss", yscale="log")
    acc = left.twinx()
    acc.plot(inter["alpha"], inter["test_acc"], color="C1", ls="--", label="test acc.")
    acc.set_ylabel("test accuracy (%)")
    left.set_title("1-D interpolation (Keskar et al. 2017, Fig. 3)")
    left.legend(handles=left.lines + acc.lines, fontsize=8)
    for i, (run, curve) in enumerate(data["directions"].items()):
        sharp = data["sharpness"][run]
        label = f"{names[i]} (rise at ±0.5: {sharp:.3g})"
        right.plot(curve["alpha"], curve["train_loss"], color=f"C{i}", label=label)
    right.set(xlabel="alpha along a filter-normalized direction", ylabel="train loss")
    right.set_yscale("log")
    right.set_title("Random direction (Li et al. 2018)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_suffix(s) for s in (".png", ".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="a run directory (e.g. the small-batch run)")
    parser.add_argument("run_b", type=Path, help="another run of the same model")
    parser.add_argument("--out", type=Path, default=Path("results/landscape"))
    parser.add_argument("--titles", nargs=2, default=None)
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        data = landscape(
            args.run_a, args.run_b, points=args.points, samples=args.samples, seed=args.seed
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in plot(data, args.out, args.titles):
        print(path)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sharp vs flat minima: the loss around two trained runs (a small- and a large-batch one).

Left: the 1-D linear interpolation theta(a) = (1 - a) theta_A + a theta_B, a in [-0.5, 1.5]
(Keskar et al. 2017, "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
Minima", Fig. 3, after Goodfellow et al. 2015), training loss and test accuracy. Right: the
loss along one random filter-normalized direction per run (Li et al. 2018, "Visualizing the
Loss Landscape of Neural Nets", Sec. 4): d ~ N(0, I) rescaled so each filter d_i has the norm
of the filter w_i it perturbs; tensors with ndim <= 1 (biases, norm parameters) get d = 0, as
in Li et al. Losses are over the first ``--samples`` training images, the model in eval mode.

    python scripts/plot_landscape.py runs/largebatch-quick/sgd/b32/seed0 \
        runs/largebatch-quick/sgd/b2048/seed0 --out results/landscape
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from trainrepro.build import build_run
from trainrepro.checkpoint import load_checkpoint, restore_model
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


@torch.no_grad()
def loss_and_acc(run: Any, loader: Any, samples: int, batch: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) over the first ``samples`` examples of ``loader``."""
    run.model.eval()
    loss, correct, seen = 0.0, 0, 0
    for x, y in loader.batches(0, batch, shuffle=False, drop_last=False):
        x, y = x[: samples - seen], y[: samples - seen]
        logits = run.model(x)
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if seen >= samples:
            break
    return loss / seen, 100.0 * correct / seen


def _set(run: Any, state: State) -> None:
    run.model.load_state_dict(state)


def interpolation(
    run: Any, a: State, b: State, alphas: np.ndarray, samples: int
) -> dict[str, list[float]]:
    """Train loss and test accuracy at (1 - alpha) a + alpha b; float buffers (BN running
    statistics) are interpolated with the weights, integer counters taken from ``a``."""
    out: dict[str, list[float]] = {"alpha": alphas.tolist(), "train_loss": [], "test_acc": []}
    for alpha in alphas:
        mixed = {
            k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v for k, v in a.items()
        }
        _set(run, mixed)
        out["train_loss"].append(loss_and_acc(run, run.train_loader, samples)[0])
        out["test_acc"].append(loss_and_acc(run, run.test_loader, samples)[1])
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
    run: Any, state: State, alphas: np.ndarray, samples: int, seed: int
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
        losses.append(loss_and_acc(run, run.train_loader, samples)[0])
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
    inter = interpolation(run, a, b, np.linspace(-0.5, 1.5, points), samples)
    radial = np.linspace(-1.0, 1.0, points)
    curves = {
        str(run_a): random_direction(run, a, radial, samples, seed),
        str(run_b): random_direction(run_other, b, radial, samples, seed),
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

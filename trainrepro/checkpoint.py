"""Checkpoints that let a run continue bit for bit where it stopped.

Schedules and the data order are pure functions of (seed, epoch, update), so a checkpoint
needs only the model, the optimizer, the counters, the metrics rows so far, the global RNG
state (dropout draws from it) and the state of each callback (trainrepro.callbacks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainrepro.records import atomic_torch_save

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Progress:
    """Counters at the end of the last completed epoch."""

    epoch: int = 0
    updates: int = 0
    samples: int = 0
    grad_evals: int = 0
    wall_seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    progress: Progress,
    config: dict[str, Any],
    callbacks: list[dict[str, Any]] | None = None,
) -> None:
    """``callbacks``: each callback's ``state_dict()``, in the order of ``cfg.callbacks``."""
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": asdict(progress),
            "rng": rng_state(),
            "config": config,
            "callbacks": callbacks or [],
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the file holds RNG byte tensors and plain dicts we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    optimizer.load_state_dict(state)

"""Checkpoints that let a run continue bit for bit where it stopped, and that cannot run code.

Schedules and the data order are pure functions of (seed, epoch, update), so a checkpoint
needs only the model, the optimizer, the counters (with the position inside the epoch), the
metrics rows so far, the global RNG state (dropout draws from it) and each callback's state.

Everything is stored as tensors and plain containers (the config as YAML text, RNG states as
byte tensors) and read back with ``torch.load(weights_only=True)``: unpickling a file may not
construct arbitrary objects, so a checkpoint from anywhere cannot execute code on
``resume=true``. Every problem with a file is one ConfigError line naming it.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from trainrepro.engine.records import atomic_torch_save
from trainrepro.errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "trainrepro-checkpoint"
VERSION = 2  # 1: config as a dict, epoch ends only; 2: config as YAML, mid-epoch position
REQUIRED = ("model", "optimizer", "progress", "rng")
# Keys that may differ between a run and its resumption without changing its numbers.
RESUME_FREE_KEYS = ("resume", "progress", "eval_batch_size", "checkpoint_every")
# Keys added after checkpoints were first written (dotted paths), with the value a checkpoint
# written before them implies: such a run still resumes, as long as the key keeps that value.
ADDED_KEYS: dict[str, Any] = {
    "callbacks": {},
    # logger=csv, which adds no callback, so older checkpoints' callback states still pair up
    "logger._target_": "trainrepro.instruments.loggers.csv",
    "logger.name": "csv",
    "checkpoint_every": None,
    "channels_last": False,
    "compile": False,
    "deterministic": False,
    "normalization.weight_standardization": False,
    "normalization.sync": False,
    "optimizer.norm_decay_target": 0.0,
    "optimizer.fused": None,  # torch's default kernels, as before the key
    "optimizer.bias_correction": "shifted",  # adam_2k before the authors' convention
    "optimizer.decay_scale": "lr",  # adamw: torch's decay x current lr, as before the key
    "optimizer.weight_decay_norm": None,  # adamw: weight_decay as given
    "schedule.scale_lr_with_batch": False,
    "schedule.reference_batch": 256,
    "schedule.gamma": 1.0,  # cyclic's exp_range factor (exponential's gamma was always stored)
    "dataset.folds": None,
    "dataset.fold": None,
    "dataset.test_size": None,
    "model.projection": "linear",  # mobilenetv2, Fig. 6a ablation
    # mobilenetv2's Fig. 6b ablation (resnet_cifar's model.shortcut was always stored)
    "model.shortcut": "bottleneck",
}


@dataclass
class Progress:
    """Counters over the run, and the position inside the epoch in progress.

    ``epoch`` counts completed epochs. While epoch ``epoch`` (from 0) is under way, ``batch``
    of its batches are done, at ``batch_size`` (fixed when the epoch began), and ``loss_sum``,
    ``correct``, ``seen`` and ``train_seconds`` hold its running totals; at an epoch boundary
    ``batch`` is 0 and the rest are reset.
    """

    epoch: int = 0
    updates: int = 0
    samples: int = 0
    grad_evals: int = 0
    wall_seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    batch: int = 0
    batch_size: int | None = None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    train_seconds: float = 0.0

    @property
    def mid_epoch(self) -> bool:
        return self.batch > 0

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Record the finished epoch's row and reset the in-epoch position."""
        self.rows.append(row)
        self.epoch += 1
        self.batch, self.batch_size = 0, None
        self.loss_sum, self.correct, self.seen, self.train_seconds = 0.0, 0, 0, 0.0


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_text(config: dict[str, Any]) -> str:
    """The resolved config as YAML: how checkpoints store it, and how it is compared."""
    return yaml.safe_dump(config, sort_keys=True)


def check_same_config(
    saved: dict[str, Any], config: dict[str, Any], source: str = "the checkpoint's"
) -> None:
    """Raise ConfigError naming the first key (and listing the others) where the resolved
    ``config`` differs from the ``saved`` one of the run it would continue."""
    saved = flatten(saved)
    config = flatten(yaml.safe_load(config_text(config)))  # compared as stored: through YAML
    missing = object()

    def old(key: str) -> Any:
        return saved.get(key, ADDED_KEYS.get(key, missing))

    changed = sorted(
        k
        for k in set(saved) | set(config)
        if k.split(".")[0] not in RESUME_FREE_KEYS and old(k) != config.get(k, missing)
    )
    if changed:
        key = changed[0]
        was = old(key)
        raise ConfigError(
            key,
            config.get(key, "(absent)"),
            f"differs from {source} ({'(absent)' if was is missing else was}); a resumed run "
            "must keep its config"
            + (f" (also changed: {', '.join(changed[1:])})" if len(changed) > 1 else ""),
        )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping stays a leaf."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    progress: Progress,
    config: dict[str, Any],
    callbacks: list[dict[str, Any]] | None = None,
    update_rule: dict[str, Any] | None = None,
) -> None:
    """Write atomically; ``callbacks`` are the callbacks' ``state_dict()``s in config order,
    ``update_rule`` the run's update rule's (trainrepro.optim.update_rules)."""
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": asdict(progress),
            "rng": rng_state(),
            "config_yaml": config_text(config),
            "callbacks": callbacks or [],
            "update_rule": update_rule or {},
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with tensors and plain containers only; ``config`` comes back a dict.

    Raises ConfigError (key ``checkpoint``) for a file that is unreadable, truncated, holds
    objects other than tensors and containers, or is not a trainrepro checkpoint.
    """
    try:
        # torch warns about a foreign pickle before refusing it; the refusal says it all.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError("checkpoint", path, _refusal(e)) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        if "weights_only" in str(e):
            raise ConfigError("checkpoint", path, _refusal(e)) from None
        raise ConfigError(
            "checkpoint", path, f"unreadable, truncated or not a torch file ({_first_line(e)})"
        ) from None
    for w in caught:  # a file that loads keeps its warnings
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(ckpt, dict):
        raise ConfigError("checkpoint", path, f"not a trainrepro checkpoint (a {type(ckpt)})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if "config_yaml" not in ckpt and "config" not in ckpt:
        missing.append("config_yaml")
    if missing:
        raise ConfigError(
            "checkpoint", path, f"not a trainrepro checkpoint (no {', '.join(missing)})"
        )
    if "config_yaml" in ckpt:  # version 1 stored the dict itself
        ckpt["config"] = yaml.safe_load(ckpt["config_yaml"])
    else:
        ckpt["config"] = yaml.safe_load(config_text(ckpt["config"]))
    known = {f.name for f in fields(Progress)}
    unknown = sorted(set(ckpt["progress"]) - known)
    if unknown:
        raise ConfigError(
            "checkpoint", path, f"written by another version (progress keys: {unknown})"
        )
    return ckpt


def restore_model(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` into ``model``, or name how the checkpoint's model differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    problems = [
        f"{len(items)} {what} (e.g. {items[0]})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if problems:
        raise ConfigError(
            "checkpoint", path, f"holds a different model than the config's: {'; '.join(problems)}"
        )
    model.load_state_dict(state)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    optimizer.load_state_dict(state)


def _refusal(e: BaseException) -> str:
    """Why a file that torch's safe loader rejects is not loaded, in our words: torch's own
    message suggests loading it unsafely, advice a user must never be given."""
    name = re.search(r"GLOBAL ([\w.]+)", str(e))
    return (
        "refused: it holds objects other than tensors and plain values"
        f"{f' (here {name.group(1)})' if name else ''}, so for safety it was not loaded "
        "(such objects can run code)"
    )


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


FINISHED = ("completed", "diverged")


def run_state(run_dir: Path) -> str:
    """What a restartable sweep does with ``run_dir``: ``done`` (summary.json says completed
    or diverged: keep it), ``resume`` (a checkpoint is there) or ``fresh`` (start over)."""
    summary = Path(run_dir) / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("status") in FINISHED:
                return "done"
        except (json.JSONDecodeError, AttributeError):
            pass
    return "resume" if (Path(run_dir) / CHECKPOINT_NAME).is_file() else "fresh"

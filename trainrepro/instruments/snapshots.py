"""Weight snapshots at the end of each learning-rate cycle, for snapshot ensembles.

Loshchilov & Hutter (SGDR, ICLR 2017) ensemble the models reached at the end of their cosine
cycles, where the lr is lowest, just before each warm restart; Huang et al. ("Snapshot
Ensembles: Train 1, get M for free", ICLR 2017) average the softmax outputs of the last M such
snapshots. ``Snapshots`` saves them; ``trainrepro ensemble RUN_DIR`` (trainrepro/analysis/
ensemble.py) evaluates them alone and as ensembles.

Which epochs: with ``at: cycle_ends``, the cycle ends of the run's own schedule object
(``SGDR.cycle_ends``: T_0, T_0 + T_0 T_mult, ...; ``Cyclic.cycle_ends``: every trough after the
first), plus any listed in ``epochs``; with ``at: epochs``, only those listed (any schedule).
The schedule is known only once the run is built, so the choice is checked in ``start``: a
refusal there comes before the first update, and the CLI removes the new run folder.

Each snapshot is ``snapshots/epoch_XXXX.pt`` in the run dir: the model's ``state_dict``
(parameters and buffers, BN running statistics included) as CPU tensors and nothing else, so
``torch.load(path, weights_only=True)`` reads it and ``model.load_state_dict`` takes it.
``snapshots/index.json`` lists epoch, updates, test accuracy and loss of each. Both are written
atomically, by rank 0 only under torchrun. The list of snapshots travels in the checkpoint; on
resume, files the checkpoint does not know of (written after it, before a crash) are removed,
and they are written again when their epoch ends again, so none is lost or duplicated.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainrepro.engine.distributed import is_main
from trainrepro.engine.records import atomic_torch_save, is_temporary, write_json
from trainrepro.engine.run import Callback
from trainrepro.errors import ConfigError, check_int
from trainrepro.schedules import Warmup

if TYPE_CHECKING:
    from trainrepro.engine.run import Run
    from trainrepro.schedules import Schedule

KEY = "callbacks.snapshots"
FOLDER = "snapshots"
INDEX_NAME = "index.json"
FILE_PATTERN = re.compile(r"epoch_(\d{4,})\.pt")
AT = ("cycle_ends", "epochs")
# Cycle ends are sums of float periods: one this close to a whole epoch is that epoch.
WHOLE_TOL = 1e-9


def file_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def _curve(schedule: Schedule) -> Schedule:
    """The schedule inside any warmup (which only scales the first updates' lr)."""
    while isinstance(schedule, Warmup):
        schedule = schedule.inner
    return schedule


def cycle_ends(schedule: Schedule, epochs: int) -> list[float] | None:
    """The cycle ends within ``epochs`` of a schedule with cycles (sgdr, cyclic); None for one
    without."""
    ends = getattr(_curve(schedule), "cycle_ends", None)
    return None if ends is None else ends(float(epochs))


def snapshot_epochs(schedule: Schedule, epochs: int, at: str, listed: list[int]) -> list[int]:
    """The epochs (from 1) at whose end a snapshot is taken; ConfigError naming the key when
    ``at`` does not fit the schedule or a listed epoch is after the run's last."""
    late = [e for e in listed if e > epochs]
    if late:
        raise ConfigError(
            f"{KEY}.epochs", listed, f"{late[0]} is after the run's last (epochs={epochs})"
        )
    chosen = set(listed)
    if at == "cycle_ends":
        ends = cycle_ends(schedule, epochs)
        name = type(_curve(schedule)).__name__.lower()  # Cosine -> cosine, as conf/ names it
        if ends is None:
            raise ConfigError(
                f"{KEY}.at",
                at,
                f"schedule={name} has no cycles (sgdr and cyclic have); "
                f"set {KEY}.at=epochs and list them in {KEY}.epochs",
            )
        if not ends:
            raise ConfigError(
                f"{KEY}.at", at, f"no cycle of the schedule ends within the run's {epochs} epochs"
            )
        odd = [e for e in ends if abs(e - round(e)) > WHOLE_TOL * max(1.0, e)]
        if odd:
            shown = ", ".join(f"{e:g}" for e in ends[:4]) + (", ..." if len(ends) > 4 else "")
            raise ConfigError(
                f"{KEY}.at",
                at,
                f"the schedule's cycles end at epochs {shown}; snapshots are taken at epoch ends, "
                "so the cycles must end at whole epochs",
            )
        chosen |= {round(e) for e in ends}
    return sorted(chosen)


class Snapshots(Callback):
    """Save the model's weights at the end of the chosen epochs (see the module doc)."""

    def __init__(self, *, at: str, epochs: list[int]) -> None:
        self.at = at
        self.listed = epochs
        self.epochs: list[int] = []  # set in start(), from the run's schedule
        self.entries: list[dict[str, Any]] = []  # the snapshots written, oldest first
        self.folder: Path | None = None

    def start(self, run: Run, run_dir: Path) -> None:
        total = _curve(run.schedule).epochs  # type: ignore[attr-defined]  # the run's epochs
        self.epochs = snapshot_epochs(run.schedule, int(total), self.at, self.listed)
        self.folder = Path(run_dir) / FOLDER
        if is_main():
            self._tidy()

    def _tidy(self) -> None:
        """Make the folder hold exactly the snapshots in ``entries`` (see the module doc)."""
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        known = {entry["file"] for entry in self.entries}
        for path in self.folder.iterdir():
            ours = FILE_PATTERN.fullmatch(path.name) or is_temporary(path.name)
            if path.is_file() and ours and path.name not in known:
                path.unlink()
        self._write_index()

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        if epoch not in self.epochs:
            return
        loss = row.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            return  # the run diverged in this epoch: its weights are no model worth keeping
        entry = {
            "epoch": epoch,
            "updates": row.get("updates"),
            "test_acc": row.get("test_acc"),
            "test_loss": row.get("test_loss"),
            "file": file_name(epoch),
        }
        # A rerun of this epoch (resumed from before it) replaces its entry, never adds one.
        self.entries = [e for e in self.entries if e["epoch"] != epoch] + [entry]
        if is_main() and self.folder is not None:
            state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
            atomic_torch_save(state, self.folder / entry["file"])
            self._write_index()

    def _write_index(self) -> None:
        assert self.folder is not None
        write_json(
            self.folder / INDEX_NAME,
            {"at": self.at, "epochs": self.epochs, "snapshots": self.entries},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"entries": [dict(e) for e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = [dict(e) for e in state.get("entries", [])]


def snapshots(
    model: torch.nn.Module, *, at: str = "cycle_ends", epochs: list[int] | None = None
) -> Snapshots:
    """Builder for ``conf/callbacks/snapshots.yaml``; the schedule is checked in ``start``."""
    if at not in AT:
        raise ConfigError(f"{KEY}.at", at, f"must be one of {', '.join(AT)}")
    listed = [] if epochs is None else epochs
    if isinstance(listed, str | bytes) or not isinstance(listed, list | tuple):
        raise ConfigError(f"{KEY}.epochs", epochs, "must be a list of epochs (from 1)")
    listed = [check_int(f"{KEY}.epochs", e, 1) for e in listed]
    if len(set(listed)) != len(listed):
        raise ConfigError(f"{KEY}.epochs", listed, "lists an epoch twice")
    if at == "epochs" and not listed:
        raise ConfigError(f"{KEY}.epochs", listed, f"{KEY}.at=epochs needs at least one epoch")
    return Snapshots(at=at, epochs=sorted(listed))


def read_index(run_dir: Path) -> dict[str, Any] | None:
    """``snapshots/index.json`` of a run, or None when it has none."""
    path = Path(run_dir) / FOLDER / INDEX_NAME
    return json.loads(path.read_text()) if path.is_file() else None

"""``trainrepro ensemble RUN_DIR``: a run's weight snapshots alone and as snapshot ensembles.

Huang et al. ("Snapshot Ensembles: Train 1, get M for free", ICLR 2017) average the softmax
outputs of the last M snapshots of one run; Loshchilov & Hutter (SGDR, ICLR 2017) ensemble
the snapshots taken at SGDR's restarts. The snapshots are those of ``+callbacks=snapshots``
(trainrepro/instruments/snapshots.py, listed in ``snapshots/index.json``).

The run's model and test data are rebuilt from its ``config.yaml`` with the trainer's own
builder (``trainrepro.engine.build.build_run``; instruments, the initializer and
``torch.compile`` play no part here), each snapshot is loaded with ``weights_only=True`` and
evaluated as the trainer evaluates (eval mode, the run's autocast), and the ensemble of the
last m snapshots, m = 1..M, is scored by the mean of their softmax probabilities: accuracy
of its argmax, and loss = the mean negative log of the probability it gives the true class.
The mean is accumulated as log-sum-exp of float64 log-probabilities, so one N x C buffer
holds it and a confident member cannot underflow it to log 0. The table is printed and
written to ``ensemble.csv`` and ``ensemble.json`` in the run dir (atomically, replacing any
earlier evaluation).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from trainrepro.engine.records import atomic_write_text, write_json
from trainrepro.errors import ConfigError
from trainrepro.instruments.snapshots import FOLDER, INDEX_NAME, read_index

CSV_NAME = "ensemble.csv"
JSON_NAME = "ensemble.json"
COLUMNS = ("kind", "m", "members", "test_acc", "test_loss")
DEVICES = ("cpu", "cuda", "auto")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainrepro ensemble",
        description="Evaluate a run's snapshots (+callbacks=snapshots) alone and as ensembles of "
        "the last m = 1..M (mean of softmax probabilities; Huang et al. 2017); writes "
        f"{CSV_NAME} and {JSON_NAME} in the run dir.",
    )
    p.add_argument("run_dir", type=Path, help="a run directory with config.yaml and snapshots/")
    p.add_argument("--last", type=int, default=None, help="M, the largest ensemble (default: all)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="evaluation batch (default: eval_batch_size)"
    )
    p.add_argument("--device", choices=DEVICES, default=None, help="default: the run's device")
    return p


def load_config(run_dir: Path) -> DictConfig:
    if not run_dir.is_dir():
        raise ConfigError("run_dir", run_dir, "is not a directory")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("run_dir", run_dir, "has no config.yaml: not a trainrepro run")
    return OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text()))


def snapshot_entries(run_dir: Path) -> list[dict[str, Any]]:
    """The run's snapshots, oldest first, each file checked to be there."""
    index = read_index(run_dir)
    entries = [] if index is None else list(index.get("snapshots", []))
    if not entries:
        raise ConfigError(
            "run_dir", run_dir, f"has no snapshots ({FOLDER}/{INDEX_NAME}); train with "
            "+callbacks=snapshots",
        )  # fmt: skip
    for entry in entries:
        if not (run_dir / FOLDER / entry["file"]).is_file():
            raise ConfigError(
                "run_dir", run_dir, f"{FOLDER}/{INDEX_NAME} lists {entry['file']}, which is missing"
            )
    return entries


def check_last(last: int | None, entries: list[dict[str, Any]]) -> int:
    n = len(entries)
    if last is None:
        return n
    if last < 1:
        raise ConfigError("--last", last, "must be >= 1")
    if last > n:
        epochs = ", ".join(str(e["epoch"]) for e in entries)
        raise ConfigError("--last", last, f"the run has only {n} snapshot(s) (epochs {epochs})")
    return last


def eval_config(cfg: DictConfig, device: str | None) -> tuple[DictConfig, list[str]]:
    """The run's config made for evaluation, and notes on what was changed for it."""
    from trainrepro.engine.build import cpu_has_native_bf16, resolve_device

    cfg.resume = False
    cfg.callbacks = {}  # instruments play no part in evaluation
    cfg.compile = False  # minutes of compiling for one pass; state_dict keys are the same
    if "init" in cfg:
        del cfg["init"]  # the weights come from the snapshots
    if device is not None:
        cfg.device = device
    notes = []
    on_cpu = resolve_device(str(cfg.device)).type == "cpu"
    if on_cpu and cfg.precision in ("fp16", "bf16"):
        if cfg.precision == "fp16" or not cpu_has_native_bf16():
            notes.append(f"precision={cfg.precision} cannot run on this CPU: evaluated in fp32")
            cfg.precision = "fp32"
    return cfg, notes


def load_snapshot(path: Path) -> dict[str, torch.Tensor]:
    """A snapshot's state_dict, read with tensors only (a file that holds code is refused)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
    ) as e:
        # torch's own message advises loading the file unsafely: it is never passed on.
        if "GLOBAL" in str(e):
            reason = "refused: it holds objects other than tensors, which could run code"
        else:
            reason = f"unreadable, truncated or not a torch file ({type(e).__name__})"
        raise ConfigError("snapshot", path, reason) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("snapshot", path, "is not a state_dict of tensors")
    return state


@torch.inference_mode()
def log_probabilities(run: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 log-softmax [N, C] of ``run.model`` over the test set in order, and the labels."""
    from trainrepro.optim.update_rules import autocast

    run.model.eval()
    out, labels = [], []
    for x, y in run.test_loader.batches(0, batch_size, shuffle=False, drop_last=False):
        with autocast(run):
            logits = run.model(x)
        out.append(torch.log_softmax(logits.float().double(), dim=1))
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


def score(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy in percent, mean negative log-likelihood) of (averaged) probabilities."""
    nll = -log_probs.gather(1, labels.view(-1, 1)).mean().item()
    acc = 100.0 * (log_probs.argmax(1) == labels).double().mean().item()
    return acc, nll


def evaluate_snapshots(
    run: Any, run_dir: Path, entries: list[dict[str, Any]], last: int, batch_size: int
) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor]:
    """Rows for every snapshot alone, then for the ensembles of the last m = 1..``last``;
    also the log of the mean probabilities of the last ``last`` snapshots, and the labels."""
    from trainrepro.engine.checkpoint import restore_model

    singles, ensembles = [], []
    running = labels = None  # log of the sum of the members' probabilities
    for k, entry in enumerate(reversed(entries)):  # newest first: ensemble m grows by one
        path = run_dir / FOLDER / entry["file"]
        try:
            restore_model(run.model, load_snapshot(path), path)
        except ConfigError as e:
            raise ConfigError("snapshot", path, e.reason) from None
        log_probs, labels = log_probabilities(run, batch_size)
        acc, loss = score(log_probs, labels)
        singles.append(_row("snapshot", [entry["epoch"]], acc, loss, entry.get("test_acc")))
        if k < last:
            running = log_probs if running is None else torch.logaddexp(running, log_probs)
            members = [e["epoch"] for e in entries[len(entries) - k - 1 :]]
            acc, loss = score(running - math.log(k + 1), labels)
            ensembles.append(_row("ensemble", members, acc, loss))
    assert running is not None and labels is not None
    return [*reversed(singles), *ensembles], running - math.log(last), labels


def _row(
    kind: str, members: list[int], acc: float, loss: float, run_acc: float | None = None
) -> dict[str, Any]:
    row = {"kind": kind, "m": len(members), "members": members, "test_acc": acc, "test_loss": loss}
    if kind == "snapshot":
        row["run_test_acc"] = run_acc  # what the run measured at that epoch, from the index
    return row


def ensemble(
    run_dir: Path,
    *,
    last: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate the snapshots of ``run_dir``; the report written to ensemble.json."""
    from trainrepro.engine.build import build_run

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    entries = snapshot_entries(run_dir)
    last = check_last(last, entries)
    if batch_size is not None and batch_size < 1:
        raise ConfigError("--batch-size", batch_size, "must be >= 1")
    cfg, notes = eval_config(cfg, device)
    batch = int(batch_size or cfg.eval_batch_size)
    run = build_run(cfg)
    rows, _, labels = evaluate_snapshots(run, run_dir, entries, last, batch)
    return {
        "run_dir": str(run_dir),
        "last": last,
        "n_test": int(labels.numel()),
        "device": str(run.device),
        "precision": cfg.precision,
        "notes": notes,
        "rows": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"note: {note}" for note in report["notes"]]
    lines.append(
        f"{'kind':<10} {'m':>3}  {'members (epochs)':<24} {'test acc %':>10} {'test loss':>10}"
    )
    for r in report["rows"]:
        members = " ".join(str(e) for e in r["members"])
        if len(members) > 24:
            members = "..." + members[-21:]
        lines.append(
            f"{r['kind']:<10} {r['m']:>3}  {members:<24} {r['test_acc']:>10.2f} "
            f"{r['test_loss']:>10.4f}"
        )
    return "\n".join(lines)


def write_report(run_dir: Path, report: dict[str, Any], argv: list[str]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in report["rows"]:
        members = " ".join(str(e) for e in r["members"])
        writer.writerow({**r, "members": members, "test_acc": repr(r["test_acc"]),
                         "test_loss": repr(r["test_loss"])})  # fmt: skip
    atomic_write_text(run_dir / CSV_NAME, out.getvalue())
    write_json(run_dir / JSON_NAME, {**report, "command": ["ensemble", *argv]})


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        report = ensemble(
            args.run_dir, last=args.last, batch_size=args.batch_size, device=args.device
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    write_report(args.run_dir, report, argv)
    print(f"wrote {args.run_dir / CSV_NAME} and {args.run_dir / JSON_NAME}")
    return 0

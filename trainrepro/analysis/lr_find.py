"""``trainrepro lr-find``: the learning-rate range test (Smith, "Cyclical Learning Rates for
Training Neural Networks", WACV 2017, Sec. 3.3).

    trainrepro lr-find model=lenet5 dataset=synthetic optimizer=sgd --mode linear --end 1

The config is composed and checked as a run's would be, and model, data and optimizer are built
by the run's own builder (``trainrepro.engine.build.build_run``). The configured schedule is
then not used: update i of n (from 0) trains at lr = start + (end - start) i/(n-1) (``linear``,
the paper's test) or start (end/start)^(i/(n-1)) (``exp``, as fastai's lr_find and
Lightning's tuner), so the first update uses --start and the last --end. The optimizer's other
hyper-parameters (momentum, betas, weight decay) stay as configured. Per update: lr, the batch's
loss and accuracy before the step, and their bias-corrected moving averages. The test stops at
a non-finite loss or when the smoothed loss exceeds --stop-factor times its minimum so far.

Suggestions (``suggest``), from the smoothed curves of the n finite updates recorded, the
first s = min(SKIP_START (10), n // 10) left out of every search (as Lightning skips them: an
average of a few batches is still noisy); slopes are per update, i.e. against the plot's x
axis (log10 lr in exp mode, lr in linear mode):

- loss, ``steepest``: the lr where the smoothed loss falls fastest (most negative central
  difference, numpy.gradient) between update s+1 and its lowest point. An lr to train at.
- loss, ``min_loss/10``: the lr of the lowest smoothed loss / MIN_DIVISOR (10; fastai's
  "minimum"): a largest lr safely below where the loss turns up; none if below --start.
- accuracy, the paper's reading (base_lr where the accuracy starts to increase, max_lr where it
  slows, becomes ragged or falls): p the first update of the highest smoothed accuracy after
  the first s, q the lowest from s+1 to p, rise = acc[p] - acc[q]. ``base_lr``: the lr of the
  update after the last one before p still below acc[q] + ACC_RISE[0] (20%) x rise (where the
  climb starts for good; noise before it may touch the line). ``max_lr``: the first from there
  that reaches acc[q] + ACC_RISE[1] (90%) x rise (where the climb slows), so base_lr <= max_lr.
  None if the accuracy rose less than MIN_ACC_RISE (1) percentage point.

Only the report is written, all at the end, into --out: lr_find.csv, lr_find.json,
lr_find.png (trainrepro.analysis.lr_find_plot). No checkpoint, no run directory.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from trainrepro.errors import ConfigError

MODES = ("exp", "linear")
SKIP_START = 10  # updates skipped by the steepest-slope search (at most a tenth of them)
MIN_DIVISOR = 10.0
ACC_RISE = (0.2, 0.9)  # fractions of the accuracy's rise: base_lr, max_lr
MIN_ACC_RISE = 1.0  # percentage points of smoothed batch accuracy
COLUMNS = ("update", "lr", "loss", "smoothed_loss", "acc", "smoothed_acc")
# The module doc's paragraphs on the suggestions, copied into lr_find.json.
RULES = "Suggestions" + (__doc__ or "").partition("\nSuggestions")[2].partition("\n\nOnly")[0]
MEANINGS = {
    "steepest": "where the smoothed loss falls fastest: an lr to train at",
    "min_loss/10": f"the lr of the lowest smoothed loss / {MIN_DIVISOR:g}: a safe largest lr",
    "base_lr": f"accuracy has made {ACC_RISE[0]:.0%} of its rise: it starts to increase "
    "(the paper's base_lr)",
    "max_lr": f"accuracy has made {ACC_RISE[1]:.0%} of its rise: it slows, then is ragged or "
    "falls (the paper's max_lr)",
}


def lr_sequence(start: float, end: float, n: int, mode: str) -> list[float]:
    """The n learning rates of the test, from ``start`` to ``end`` inclusive."""
    if mode == "linear":
        return [start + (end - start) * i / (n - 1) for i in range(n)]
    return [start * (end / start) ** (i / (n - 1)) for i in range(n)]


class Smoother:
    """Bias-corrected exponential moving average (Adam's correction): the average starts at 0,
    so after k values it is divided by 1 - beta^k."""

    def __init__(self, beta: float) -> None:
        self.beta, self.avg, self.k = beta, 0.0, 0

    def __call__(self, value: float) -> float:
        self.k += 1
        self.avg = self.beta * self.avg + (1.0 - self.beta) * value
        return self.avg / (1.0 - self.beta**self.k)


def smooth(values: Sequence[float], beta: float) -> list[float]:
    """:class:`Smoother` over ``values``."""
    smoother = Smoother(beta)
    return [smoother(v) for v in values]


def _pick(lrs: Sequence[float], i: int, name: str, lr: float | None = None) -> dict[str, Any]:
    return {"lr": lrs[i] if lr is None else lr, "update": i + 1, "meaning": MEANINGS[name]}


def _none(name: str, why: str) -> dict[str, Any]:
    return {"lr": None, "update": None, "meaning": MEANINGS[name], "why": why}


def suggest(
    lrs: Sequence[float], loss: Sequence[float], acc: Sequence[float], start: float
) -> dict[str, dict[str, dict[str, Any]]]:
    """The suggestions of the module doc from the smoothed, finite ``loss`` and ``acc`` (percent)
    recorded at ``lrs``; ``start`` is the lowest lr tested. Each is {lr, update (from 1: where
    it was read), meaning}, or lr None and ``why``."""
    skip = min(SKIP_START, len(lrs) // 10)  # indices below it are not searched
    return {
        "loss": _loss_suggestions(lrs, np.asarray(loss, dtype=float), start, skip),
        "accuracy": _accuracy_suggestions(lrs, np.asarray(acc, dtype=float), skip),
    }


def _loss_suggestions(
    lrs: Sequence[float], loss: np.ndarray, start: float, skip: int
) -> dict[str, dict[str, Any]]:
    lowest = skip + int(np.argmin(loss[skip:])) if len(loss) > skip else -1
    if lowest > skip:
        steep = skip + int(np.argmin(np.gradient(loss)[skip : lowest + 1]))
        steepest = _pick(lrs, steep, "steepest")
    else:
        steepest = _none("steepest", f"the smoothed loss did not fall after update {skip + 1}")
    if lowest >= 0 and lrs[lowest] / MIN_DIVISOR >= start:
        low = _pick(lrs, lowest, "min_loss/10", lrs[lowest] / MIN_DIVISOR)
    else:
        low = _none("min_loss/10", "below the tested range (the loss was lowest too early)")
    return {"steepest": steepest, "min_loss/10": low}


def _accuracy_suggestions(
    lrs: Sequence[float], acc: np.ndarray, skip: int
) -> dict[str, dict[str, Any]]:
    rise = 0.0
    if len(acc) > skip:
        peak = skip + int(np.argmax(acc[skip:]))
        trough = skip + int(np.argmin(acc[skip : peak + 1]))
        rise = float(acc[peak] - acc[trough])
    if rise < MIN_ACC_RISE:
        why = f"the smoothed accuracy rose {rise:.2g} < {MIN_ACC_RISE:g} points after update {skip}"
        return {"base_lr": _none("base_lr", why), "max_lr": _none("max_lr", why)}
    low, high = (acc[trough] + f * rise for f in ACC_RISE)
    # base: after the last update below its threshold (noise before the climb may cross it
    # earlier); max: the first from there that reaches its own, so base_lr <= max_lr.
    base = trough + int(np.nonzero(acc[trough : peak + 1] < low)[0][-1]) + 1
    top = base + int(np.argmax(acc[base : peak + 1] >= high))
    return {"base_lr": _pick(lrs, base, "base_lr"), "max_lr": _pick(lrs, top, "max_lr")}


def range_test(
    run: Any, cfg: Any, lrs: Sequence[float], beta: float, stop_factor: float
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train one update per lr of ``lrs`` on the run's batches, epoch after epoch, until the
    loss is non-finite or the smoothed loss passes ``stop_factor`` x its minimum (0: never).
    Returns the rows (COLUMNS) and the stop record."""
    from tqdm import tqdm

    from trainrepro.engine.train import _update
    from trainrepro.optim.factory import set_lr

    smooth_loss, smooth_acc, rows, best = Smoother(beta), Smoother(beta), [], math.inf
    stop = {"reason": "completed", "update": len(lrs), "text": f"all {len(lrs)} updates done"}
    run.model.train()
    bar = tqdm(lrs, disable=not cfg.progress, leave=False, desc="lr-find")
    for k, (lr, (x, y)) in enumerate(zip(bar, _batches(run, cfg), strict=False), start=1):
        set_lr(run.optimizer, lr)
        # The trainer's own update (update rule, micro-batches, fp16 scaler); no callbacks.
        logits, loss, _ = _update(run, x, y, cfg.max_micro_batch, update=k)
        value = loss.item()
        acc = 100.0 * (logits.argmax(1) == y).float().mean().item()  # before the step
        s_loss = smooth_loss(value)
        rows.append(dict(zip(COLUMNS, (k, lr, value, s_loss, acc, smooth_acc(acc)), strict=True)))
        best = min(best, s_loss)
        if not math.isfinite(value):
            text = f"loss {value} at update {k} (lr {lr:.3g})"
            stop = {"reason": "non_finite_loss", "update": k, "text": text}
        elif stop_factor and s_loss > stop_factor * best:
            text = (
                f"smoothed loss {s_loss:.4g} > {stop_factor:g} x its minimum {best:.4g} at "
                f"update {k} (lr {lr:.3g})"
            )
            stop = {"reason": "loss_exceeded", "update": k, "text": text}
        if stop["reason"] != "completed":
            break
    bar.close()
    return rows, stop


def _batches(run: Any, cfg: Any) -> Iterator[tuple[Any, Any]]:
    """The run's training batches, epoch after epoch, at the run's first batch size."""
    batch_size = run.schedule(0.0, 0).batch_size
    epoch = 0
    while True:
        run.rule.start_epoch(run, epoch, batch_size, cfg.max_micro_batch)  # e.g. SVRG's pass
        yield from run.train_loader.batches(epoch, batch_size)
        epoch += 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainrepro lr-find",
        description="The LR range test (Smith, WACV 2017, Sec. 3.3): train with an lr rising "
        "from --start to --end and suggest bounds. Writes only lr_find.{csv,json,png} in --out.",
    )
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, as for a run")
    p.add_argument("--start", default="1e-7", help="first lr (default 1e-7)")
    p.add_argument("--end", default="10", help="last lr (default 10)")
    p.add_argument("--updates", default="300", help="at most this many updates (default 300)")
    p.add_argument(
        "--mode",
        default="exp",
        metavar="{exp,linear}",
        help="lr rise: exp (default; fastai, Lightning) or linear (the paper's)",
    )
    p.add_argument(
        "--smooth", default="0.98", help="beta of the loss and accuracy moving averages, in [0, 1)"
    )
    p.add_argument(
        "--stop-factor",
        default="4",
        help="stop when the smoothed loss exceeds this x its minimum (> 1; 0: never)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="report folder, new or empty (default: lr_find/<model>-<optimizer>-<timestamp>)",
    )
    return p


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(flag, text, "must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(flag, text, "must be a finite number")
    return value


def check_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as numbers, each checked: one ConfigError naming the flag."""
    start, end = _number("--start", args.start), _number("--end", args.end)
    if start <= 0:
        raise ConfigError("--start", args.start, "must be > 0")
    if end <= start:
        raise ConfigError("--end", args.end, f"must be > --start ({start:g})")
    updates = _number("--updates", args.updates)
    if updates != int(updates) or updates < 2:
        raise ConfigError("--updates", args.updates, "must be an integer >= 2")
    if args.mode not in MODES:
        raise ConfigError("--mode", args.mode, f"must be one of {', '.join(MODES)}")
    beta = _number("--smooth", args.smooth)
    if not 0 <= beta < 1:
        raise ConfigError("--smooth", args.smooth, "must be in [0, 1)")
    factor = _number("--stop-factor", args.stop_factor)
    if factor != 0 and factor <= 1:
        raise ConfigError("--stop-factor", args.stop_factor, "must be > 1, or 0 (never stop)")
    return {
        "start": start,
        "end": end,
        "updates": int(updates),
        "mode": args.mode,
        "smooth": beta,
        "stop_factor": factor,
    }


def check_out(out: Path) -> None:
    """Refuse a --out that is a file, a non-empty folder, or cannot be made: before training."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError("--out", out, "is a file")
        if any(out.iterdir()):
            raise ConfigError("--out", out, "is not empty; give a new or empty folder")
        return
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("--out", out, f"cannot create it in {parent}")


def check_single(overrides: Sequence[str]) -> None:
    """lr-find tests one config: a swept value (``optimizer.lr=0.1,0.2``) is refused. (argparse
    already refuses Hydra's flags, -m among them.)"""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.is_sweep_override():
            raise ConfigError(o.key_or_group, o.input_line.partition("=")[2], "give one value")


def describe(cfg: Any, run: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """What the test ran with, as built: for the printout and lr_find.json."""
    from trainrepro.engine.records import device_description
    from trainrepro.optim.factory import get_momentum

    linear = settings["mode"] == "linear"
    return {
        **settings,
        "lr_formula": "start + (end-start)*i/(n-1)" if linear else "start*(end/start)**(i/(n-1))",
        "batch_size": run.schedule(0.0, 0).batch_size,
        "schedule_not_used": cfg.schedule.get("name"),
        "model": cfg.model.get("name"),
        "dataset": cfg.dataset.get("name"),
        "optimizer": cfg.optimizer.get("name"),
        "momentum": get_momentum(run.optimizer),
        "weight_decay": run.optimizer.param_groups[0].get("weight_decay"),
        "device": device_description(run.device),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return [_finite(v) for v in value] if isinstance(value, list) else value


def report_json(cfg: Any, test: dict, rows: list, stop: dict, found: dict, argv: list) -> str:
    import matplotlib
    from omegaconf import OmegaConf

    from trainrepro.engine.records import git_revision, portable_paths, versions

    record = {
        "test": "LR range test (Smith, WACV 2017, Sec. 3.3)",
        "command": portable_paths(["trainrepro", "lr-find", *argv]),
        "settings": test,
        "updates_done": len(rows),
        "stop": stop,
        "suggestions": found,
        "rules": RULES,
        "versions": {**versions(), "matplotlib": matplotlib.__version__},
        "code": git_revision(),
        "config": portable_paths(OmegaConf.to_container(cfg, resolve=True)),
    }
    return json.dumps(_finite(record), indent=2) + "\n"


def report_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:  # repr: floats round-trip exactly
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def run(argv: Sequence[str]) -> int:
    from trainrepro.config import check_overrides

    args = parser().parse_intermixed_args(list(argv))
    settings = check_settings(args)
    cfg = check_overrides(args.overrides)  # a mistake: one line naming the override
    check_single(args.overrides)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.model.get('name', 'model')}-{cfg.optimizer.get('name', 'optimizer')}-{stamp}"
    out = args.out or Path("lr_find") / name.replace("/", "_")
    check_out(out)

    from trainrepro.analysis.lr_find_plot import plot_png
    from trainrepro.engine.build import build_run
    from trainrepro.engine.records import atomic_write_bytes

    run_ = build_run(cfg)  # every check a run makes; writes nothing
    run_.callbacks = []  # instruments write into a run folder, and there is none
    test = describe(cfg, run_, settings)
    for note in run_.data.notes:  # as a run prints them (e.g. a derived weight decay)
        print(f"note: {note}")
    print(
        f"lr-find: {test['model']} + {test['optimizer']} (momentum {test['momentum']}, "
        f"weight_decay {test['weight_decay']}) on {test['dataset']}, batch {test['batch_size']}\n"
        f"lr: {test['mode']} from {test['start']:g} to {test['end']:g} over at most "
        f"{test['updates']} updates; the configured schedule ({test['schedule_not_used']}) is "
        "not used",
        flush=True,
    )
    lrs = lr_sequence(settings["start"], settings["end"], settings["updates"], settings["mode"])
    rows, stop = range_test(run_, cfg, lrs, settings["smooth"], settings["stop_factor"])
    print(stop["text"] if stop["reason"] == "completed" else f"stopped: {stop['text']}")
    finite = [r for r in rows if math.isfinite(r["smoothed_loss"])]
    lrs_, loss, acc = ([r[c] for r in finite] for c in ("lr", "smoothed_loss", "smoothed_acc"))
    found = suggest(lrs_, loss, acc, settings["start"])
    files = {  # all made before the folder is: a failure leaves nothing
        "lr_find.csv": report_csv(rows).encode(),
        "lr_find.json": report_json(cfg, test, rows, stop, found, list(argv)).encode(),
        "lr_find.png": plot_png(rows, found, settings["mode"], f"LR range test: {name}"),
    }
    out.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        atomic_write_bytes(out / file, data)
    print("suggestions:")
    for group, picks in found.items():
        for key, pick in picks.items():
            where = f"update {pick['update']}" if pick["lr"] is not None else pick["why"]
            lr = "none" if pick["lr"] is None else f"{pick['lr']:.3g}"
            print(f"  {group:<8} {key:<11} {lr:>9}  {pick['meaning']} ({where})")
    print(f"wrote {out}/{{{','.join(files)}}}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

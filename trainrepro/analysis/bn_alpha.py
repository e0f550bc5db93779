"""``trainrepro bn-alpha <run dir>``: pick the inference example weight alpha of a trained BN
run on held-out data and report test accuracy and loss before and after (Summers & Dinneen,
ICLR 2020, Sec. 3.1; the layer change is trainrepro/norms/example_weighting.py).

The run is rebuilt from its ``config.yaml`` (``trainrepro.engine.build.build_run``) and its weights
loaded from ``checkpoint.pt`` with ``trainrepro.engine.checkpoint.load_checkpoint`` (tensors only,
``weights_only=True``). alpha is picked on the run's validation split (``dataset.val_fraction``)
when it has one; otherwise on a stratified part of its training split (``--holdout``, fixed
seed), which the model was trained on: the output says so. Nothing in the run directory is
overwritten: the JSON report goes to ``--out`` (refused if it would replace a file in the run
directory) or to a new ``bn_alpha[-k].json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from trainrepro.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_model
from trainrepro.errors import ConfigError
from trainrepro.norms.example_weighting import bn_layers, check_alpha, example_weighting

DEFAULT_ALPHAS = "0,0.01,0.02,0.05,0.1,0.2,0.3,0.5"
SPLITS = ("auto", "val", "train")


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ConfigError("--alphas", text, "must be comma-separated numbers in [0, 1]") from None
    if not alphas:
        raise ConfigError("--alphas", text, "lists no value")
    for a in alphas:
        check_alpha(a)
    # 0 is always evaluated: it is the "before" the chosen alpha is compared with.
    return sorted(set(alphas) | {0.0})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainrepro bn-alpha",
        description="Inference example weighting (Summers & Dinneen 2020, Sec. 3.1) for a run.",
    )
    p.add_argument("run_dir", type=Path, help="a run directory with config.yaml and checkpoint.pt")
    p.add_argument(
        "--alphas", default=DEFAULT_ALPHAS, help=f"candidates (default {DEFAULT_ALPHAS})"
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="auto",
        help="where alpha is picked: val (the run's dataset.val_fraction split), train (a held-out "
        "part of its training split), auto (val if the run has one, else train)",
    )
    p.add_argument("--holdout", type=float, default=0.1, help="fraction of train for --split train")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    p.add_argument("--out", type=Path, default=None, help="JSON report path")
    return p


def _load_config(run_dir: Path) -> Any:
    if not run_dir.is_dir():
        raise ConfigError("run_dir", run_dir, "is not a directory")
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError("run_dir", run_dir, f"has no {CHECKPOINT_NAME}: nothing to evaluate")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("run_dir", run_dir, "has no config.yaml")
    return OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text()))


def _report_path(run_dir: Path, out: Path | None) -> Path:
    if out is not None:
        inside = out.resolve().parent == run_dir.resolve()
        if inside and out.exists():
            raise ConfigError(
                "--out", out, "exists in the run directory; bn-alpha never overwrites"
            )
        return out
    for k in range(1, 1000):
        path = run_dir / ("bn_alpha.json" if k == 1 else f"bn_alpha-{k}.json")
        if not path.exists():
            return path
    raise ConfigError("run_dir", run_dir, "holds 999 bn_alpha reports; pass --out")


def _selection_loader(run: Any, cfg: Any, split: str, holdout: float) -> tuple[Any, str, str]:
    """(loader, split name, note) of the data alpha is picked on."""
    from trainrepro.data.loader import make_loader
    from trainrepro.data.splits import SPLIT_SEED, stratified_indices

    if split == "val" and run.val_loader is None:
        raise ConfigError(
            "--split", split, "the run has no validation split (dataset.val_fraction=0); use train"
        )
    if split in ("auto", "val") and run.val_loader is not None:
        n = len(run.val_loader)
        return run.val_loader, "val", f"alpha picked on the run's validation split ({n} images)"
    if not 0 < holdout < 1:
        raise ConfigError("--holdout", holdout, "must be in (0, 1)")
    train = run.data.train
    n = max(1, round(holdout * len(train)))
    part = train.subset(stratified_indices(train.labels, n, SPLIT_SEED))
    loader = make_loader(
        part, mean=run.data.mean, std=run.data.std, device=run.device, augment=None, seed=cfg.seed
    )
    note = (
        f"the run has no validation split: alpha picked on {n} images held out of its training "
        f"split (stratified, seed {SPLIT_SEED}), which the model was trained on"
    )
    return loader, "train-holdout", note


def bn_alpha(
    run_dir: Path,
    alphas: list[float],
    *,
    split: str = "auto",
    holdout: float = 0.1,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate every alpha on the selection split, pick the best (accuracy, then loss, then
    the smaller alpha), and evaluate the test set at alpha 0 and at the pick."""
    from trainrepro.engine.build import build_run
    from trainrepro.engine.train import evaluate
    from trainrepro.norms.batch_checks import uses_batch_statistics

    cfg = _load_config(run_dir)
    cfg.resume = False
    cfg.callbacks = {}  # instruments play no part in evaluation
    if device is not None:
        cfg.device = device
    norm = cfg.normalization
    if not uses_batch_statistics(_norm_factory(norm)):
        raise ConfigError(
            "normalization",
            norm.get("name", norm.get("_target_")),
            "has no batch norm layer; inference example weighting needs bn or ghost_bn",
        )
    run = build_run(cfg)
    ckpt_path = run_dir / CHECKPOINT_NAME
    restore_model(run.model, load_checkpoint(ckpt_path)["model"], ckpt_path)
    if not bn_layers(run.model):
        raise ConfigError("normalization", norm.get("name"), "the model has no batch norm layer")
    loader, split_name, note = _selection_loader(run, cfg, split, holdout)
    batch = int(cfg.eval_batch_size)
    rows = []
    for alpha in alphas:
        with example_weighting(run.model, alpha):
            loss, acc = evaluate(run, loader, batch)
        rows.append({"alpha": alpha, "loss": loss, "acc": acc})
    best = max(rows, key=lambda r: (r["acc"], -r["loss"], -r["alpha"]))
    test = {}
    for label, alpha in (("before", 0.0), ("after", best["alpha"])):
        with example_weighting(run.model, alpha):
            loss, acc = evaluate(run, run.test_loader, batch)
        test[label] = {"alpha": alpha, "loss": loss, "acc": acc}
    return {
        "run_dir": str(run_dir),
        "split": split_name,
        "note": note,
        "selection": rows,
        "chosen_alpha": best["alpha"],
        "test": test,
    }


def _norm_factory(node: Any) -> Any:
    from trainrepro.config import instantiate

    return instantiate("normalization", node)


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"note: {report['note']}",
        f"{'alpha':>8} {report['split'] + ' loss':>18} {'acc %':>8}",
    ]
    for r in report["selection"]:
        mark = "  <- chosen" if r["alpha"] == report["chosen_alpha"] else ""
        lines.append(f"{r['alpha']:>8g} {r['loss']:>18.4f} {r['acc']:>8.2f}{mark}")
    lines.append(f"{'test':>8} {'alpha':>8} {'loss':>9} {'acc %':>8}")
    for label, t in report["test"].items():
        lines.append(f"{label:>8} {t['alpha']:>8g} {t['loss']:>9.4f} {t['acc']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        alphas = parse_alphas(args.alphas)
        run_dir = args.run_dir
        _load_config(run_dir)  # a missing run or checkpoint is named before anything slow
        out = _report_path(run_dir, args.out)
        report = bn_alpha(
            run_dir, alphas, split=args.split, holdout=args.holdout, device=args.device
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "x" if out.resolve().parent == run_dir.resolve() else "w"  # never replace run files
    with out.open(mode) as f:
        json.dump({**report, "command": ["bn-alpha", *argv]}, f, indent=2)
    print(f"report: {out}")
    return 0

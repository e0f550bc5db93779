"""Apostolov, "Stochastic variance reduced gradient methods for training Deep Neural Networks"
(EPFL MSc project report, 2021; github.com/thecurve8/momentum_in_DL): SVRG and STORM beat
SGD, Adam and AdaGrad on LeNet/MNIST (Sec. 4.1), SVRG loses on ResNets with batch norm but
much less so without (Sec. 4.2), and MetaInit does not change much (Sec. 4.3).

Runs: conf/experiment/svrg/<preset>.yaml in runs/svrg[-quick]/<folder>/<point>/<split>/seed1,
where <split> is fold<k> (cross-validation, LeNet), test (the point trained on the whole
training split, LeNet) or val (5% validation split, ResNet). Every grid point's test run is
declared, so the list of runs is fixed and restartable; the report picks the selected ones.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd

from trainrepro.analysis.cv import fold_overrides, point_name
from trainrepro.reproduce.paper import (
    NOT_RUN,
    Claim,
    Effect,
    Measurement,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    Verdict,
)  # fmt: skip
from trainrepro.reproduce.papers.svrg_report import FIGURES, LABELS, curve, table

SEED = 1  # Sec. 4.1: "a fixed seed set to 1"
# Compared cells run at three seeds, so a claim rests on a mean and its interval, not one run.
SEEDS = (1, 2, 3)
COMPARED = ("sgd", "svrg")  # the ResNet optimizers the claims compare
VR = ("svrg", "storm")

# Grids: Table 4.1 (LeNet), 4.3 (ResNet-18), 4.6 (ResNet-101); "0.010" in 4.3/4.6 read as 0.001.
LENET_GRID = {
    "sgd": {"optimizer.lr": ["1e-5", "1e-4", "1e-3", "0.01", "0.1"]},
    "adam": {"optimizer.lr": ["1e-5", "1e-4", "1e-3", "0.01", "0.1"]},
    "adagrad": {"optimizer.lr": ["1e-4", "1e-3", "0.01", "0.1"]},
    "svrg": {"optimizer.lr": ["1e-5", "1e-4", "1e-3", "0.01", "0.1"]},
    "storm": {
        "optimizer.k": ["1e-3", "0.01", "0.1", "1"],
        "optimizer.c": ["0.1", "1", "10", "100", "1000"],
    },
}
RESNET18_GRID = {
    "sgd": {"optimizer.lr": ["0.005", "0.01", "0.05", "0.1"]},
    "adam": {"optimizer.lr": ["1e-5", "1e-4", "1e-3"]},
    "svrg": {"optimizer.lr": ["0.0005", "0.001", "0.005", "0.01"]},
}
RESNET101_GRID = {
    "sgd": {"optimizer.lr": ["0.005", "0.01", "0.05"]},
    "adam": {"optimizer.lr": ["1e-6", "1e-5", "1e-4"]},
    "svrg": {"optimizer.lr": ["0.0005", "0.001", "0.005"]},
}
# Quick: two points per optimizer around the report's selection (Tables 4.2, 4.4-4.5), 2 folds.
LENET_QUICK = {
    "sgd": {"optimizer.lr": ["0.01", "0.1"]},
    "adam": {"optimizer.lr": ["1e-4", "1e-3"]},
    "adagrad": {"optimizer.lr": ["0.01", "0.1"]},
    "svrg": {"optimizer.lr": ["0.01", "0.1"]},
    "storm": {"optimizer.k": ["0.1", "1"], "optimizer.c": ["100"]},
}
RESNET_QUICK = {
    "sgd": {"optimizer.lr": ["0.01", "0.05"]},
    "adam": {"optimizer.lr": ["1e-4", "1e-3"]},
    "svrg": {"optimizer.lr": ["0.005", "0.01"]},
}
METAINIT_LR = {"full": "0.005", "quick": "0.01"}  # Sec. 4.3: the no-BN SVRG run's lr, 0.005
# Medium: no grid, SGD and SVRG at the report's selected lrs (Tables 4.4 (BN) and 4.5 (no BN)),
# and no MetaInit run (conf/profile/svrg_medium.yaml says why).
MEDIUM_LR = {("bn", "sgd"): "0.05", ("bn", "svrg"): "0.01",
             ("none", "sgd"): "0.01", ("none", "svrg"): "0.005"}  # fmt: skip


def _points(grid: dict[str, list[str]]) -> list[tuple[str, ...]]:
    keys = list(grid)
    return [
        tuple(f"{k}={v}" for k, v in zip(keys, vals, strict=True))
        for vals in itertools.product(*grid.values())
    ]


def _lenet_runs(grids: dict, folds: int) -> tuple[Run, ...]:
    """Cross-validation folds at the report's seed; each point's test run at every seed, so the
    selected points compare as means over seeds."""
    runs = []
    for opt, grid in grids.items():
        for point in _points(grid):
            where = f"lenet_{opt}/{point_name(point)}"
            runs += [
                Run(
                    f"{where}/fold{k}/seed{SEED}",
                    f"lenet_{opt}",
                    SEED,
                    (*point, *fold_overrides(folds, k)),
                )
                for k in range(folds)
            ]
            runs += [Run(f"{where}/test/seed{s}", f"lenet_{opt}", s, point) for s in SEEDS]
    return tuple(runs)


def _resnet_runs(net: str, grids: dict, metainit_lr: str) -> tuple[Run, ...]:
    """The BN and no-BN runs of every grid point (SGD and SVRG, compared by the claims, at
    every seed; Adam, in the table only, at the report's seed), and SVRG after MetaInit
    without BN."""
    base = "resnet" if net == "resnet18" else net
    runs = [
        Run(f"{net}_{norm}_{opt}/{point_name(p)}/val/seed{s}",
            f"{base}_{opt}" if norm == "bn" else f"{base}_nobn_{opt}", s, p)
        for norm in ("bn", "none") for opt, grid in grids.items() for p in _points(grid)
        for s in (SEEDS if opt in COMPARED else (SEED,))
    ]  # fmt: skip
    p = (f"optimizer.lr={metainit_lr}",)
    runs.append(Run(f"{net}_none_svrg_metainit/{point_name(p)}/val/seed{SEED}",
                    f"{base}_nobn_svrg_metainit", SEED, p))  # fmt: skip
    return tuple(runs)


def _medium_runs() -> tuple[Run, ...]:
    """bn_gap's four ResNet-18 cells at seeds 1-3, in the folders _resnet_runs gives them."""
    return tuple(
        Run(f"resnet18_{norm}_{opt}/{point_name(p)}/val/seed{s}",
            f"resnet_{opt}" if norm == "bn" else f"resnet_nobn_{opt}", s, p)
        for (norm, opt), lr in MEDIUM_LR.items() for p in [(f"optimizer.lr={lr}",)]
        for s in SEEDS
    )  # fmt: skip


PROFILES = {
    "full": Profile(
        "full",
        _resnet_runs("resnet101", RESNET101_GRID, METAINIT_LR["full"])
        + _resnet_runs("resnet18", RESNET18_GRID, METAINIT_LR["full"])
        + _lenet_runs(LENET_GRID, 4),
        note="GPU; 39 LeNet grid points x (4 folds + test run), 2 x 11 ResNet-18 and 2 x 9 "
        "ResNet-101 runs, 2 MetaInit runs",
    ),
    "quick": Profile(
        "quick",
        _resnet_runs("resnet18", RESNET_QUICK, METAINIT_LR["quick"]) + _lenet_runs(LENET_QUICK, 2),
        config=("profile=svrg_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, 85 min (measured 2026-12-04 beside other work on the same cores; 160 "
        "min of runs over 2 workers): LeNet-5 on 8,000 of MNIST's test images "
        "(dataset.split_test_set=true), 2 grid points per optimizer x (2 folds at seed 1 + test "
        "runs at seeds 1-3), 15 epochs; ResNet-18 at width 8 on 5,000 CIFAR-10 images, BN and "
        "none, 2 lrs per optimizer (SGD and SVRG at seeds 1-3), 10 epochs; MetaInit on the no-BN "
        "SVRG run",
    ),
    "medium": Profile(
        "medium",
        _medium_runs(),
        config=("profile=svrg_medium",),
        jobs=8,
        threads=2,
        note="one GPU, fp32, estimated ~2 min with 8 runs at a time (from issue 20's H200 "
        "measurement, not a measured time): ResNet-18 at width 64 on all of CIFAR-10 (5% held "
        "out), BN and none, SGD (3 epochs) and SVRG (1 epoch, snapshot every epoch: the same "
        "142,464 gradient evaluations) at the report's selected lrs, seeds 1-3 (12 runs); no "
        "LeNet (MNIST's training set is absent: the quick profile runs lenet_vr), Adam, "
        "MetaInit or ResNet-101",
    ),
}

# The report's selected hyper-parameters (it prints no loss as a number): lr, STORM's k (c 100).
_CHOSEN = {
    "Table 4.2": {"lenet.sgd": "0.1", "lenet.adam": "1e-4", "lenet.adagrad": "0.1",
                  "lenet.svrg": "0.01", "lenet.storm": "0.1"},
    "Table 4.4": {"resnet18.bn.sgd": "0.05", "resnet18.bn.adam": "1e-4",
                  "resnet18.bn.svrg": "0.01"},
    "Table 4.5": {"resnet18.none.sgd": "0.01", "resnet18.none.adam": "1e-5",
                  "resnet18.none.svrg": "0.005"},
    "Table 4.7": {"resnet101.bn.sgd": "0.05", "resnet101.bn.adam": "1e-4",
                  "resnet101.bn.svrg": "0.005"},
    "Table 4.8": {"resnet101.none.sgd": "0.005", "resnet101.none.adam": "1e-4",
                  "resnet101.none.svrg": "0.005"},
}  # fmt: skip
NUMBERS = tuple(
    PaperNumber(key, float(v), f"k {v}, c 100" if key.endswith("storm") else v, source)
    for source, chosen in _CHOSEN.items()
    for key, v in chosen.items()
)
_PAPER = {n.key: n for n in NUMBERS}


def prepare(res: Results) -> None:
    """Split run_dir into its parts, select each optimizer's grid point, write selected.json."""
    df = res.df
    parts = df["run_dir"].str.split("/", expand=True)
    df["point"], df["split"] = parts[1], parts[2]
    df["setting"] = df["preset"].str.rsplit("_", n=1).str[0]  # lenet, resnet18_bn, ...
    df["optimizer"] = df["preset"].str.rsplit("_", n=1).str[1]
    if "grad_evals" not in df:  # an older runs.csv: counted in examples as plain SGD would
        df["grad_evals"] = df["samples"]
    final = res.final()
    selected = {}
    for preset, sub in final.groupby("preset", sort=False):
        holdout = sub[sub["split"] != "test"]
        scores = []
        for point, runs in holdout.groupby("point", sort=False):
            ok = runs[runs["status"] == "completed"]
            vals = ok["val_loss"].astype(float) if "val_loss" in ok else pd.Series(dtype=float)
            if len(ok) == len(runs) and vals.notna().all() and len(vals):
                scores.append(
                    (vals.mean(), point, vals.std() if len(vals) > 1 else math.nan, len(vals))
                )
        if scores:
            mean, point, std, n = min(scores)
            test = "test" if (sub["split"] == "test").any() else "val"
            tested = sub[(sub["point"] == point) & (sub["split"] == test)]
            selected[preset] = {
                "point": point,
                "val_loss_mean": mean,
                "val_loss_std": std,
                "folds": n,  # LeNet: folds at the report's seed; ResNet: seeds of the 5% split
                "run_dir": f"{preset}/{point}/{test}/seed{SEED}",
                "run_dirs": {int(r.split("seed")[-1]): r for r in sorted(tested["run_dir"])},
            }
    res.extras["selected"] = selected
    res.out.mkdir(parents=True, exist_ok=True)
    (res.out / "selected.json").write_text(json.dumps(selected, indent=2, default=float) + "\n")


def loss_at(res: Results, run_dir: str, evals: float) -> float:
    """Test loss at ``evals`` gradient evaluations, linear between epochs."""
    c = curve(res, run_dir)
    x, y = c["grad_evals"].astype(float).to_numpy(), c["test_loss"].astype(float).to_numpy()
    if not len(x) or evals < x[0] or evals > x[-1]:
        return math.nan
    return float(np.interp(evals, x, y))


def compare(res: Results, presets: list[str]) -> tuple[float, dict[int, dict[str, float]]] | str:
    """The largest gradient-evaluation count every selected run of ``presets`` reaches, and per
    seed each preset's test loss there (seeds every preset ran); else why not, in words."""
    chosen = res.extras.get("selected", {})
    missing = [p for p in presets if p not in chosen]
    if missing:
        return f"no selected grid point for {', '.join(missing)} (runs missing)"
    seeds = sorted(set.intersection(*(set(chosen[p]["run_dirs"]) for p in presets)))
    if not seeds:
        return f"no seed ran every one of {', '.join(presets)} at its selected point"
    runs = [chosen[p]["run_dirs"][s] for p in presets for s in seeds]
    common = min(float(curve(res, r)["grad_evals"].max()) for r in runs)
    per_seed = {
        s: {p: loss_at(res, chosen[p]["run_dirs"][s], common) for p in presets} for s in seeds
    }
    return common, per_seed


def _means(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    presets = next(iter(per_seed.values()))
    return {p: float(np.mean([row[p] for row in per_seed.values()])) for p in presets}


def measure_lenet(res: Results) -> Measurement | Verdict:
    presets = [f"lenet_{o}" for o in ("sgd", "adam", "svrg", "storm")]
    got = compare(res, presets)
    if isinstance(got, str):
        return Verdict(NOT_RUN, got)
    common, per_seed = got
    values = tuple(
        min(row["lenet_sgd"], row["lenet_adam"]) - max(row["lenet_svrg"], row["lenet_storm"])
        for row in per_seed.values()
    )
    means = _means(per_seed)
    detail = (
        f"test loss at {common:,.0f} gradient evaluations (the shortest selected run's end), "
        f"mean over seeds {', '.join(map(str, per_seed))}: "
        + ", ".join(f"{LABELS[p[6:]]} {v:.4f}" for p, v in means.items())
    )
    return Measurement(values, detail, means)


def measure_bn_gap(res: Results, net: str = "resnet18") -> Measurement | Verdict:
    presets = [f"{net}_{n}_{o}" for n in ("bn", "none") for o in ("svrg", "sgd")]
    got = compare(res, presets)
    if isinstance(got, str):
        return Verdict(NOT_RUN, f"{net}: {got}")
    common, per_seed = got

    def gap(row: dict[str, float], norm: str) -> float:
        return row[f"{net}_{norm}_svrg"] - row[f"{net}_{norm}_sgd"]

    values = tuple(gap(row, "bn") - gap(row, "none") for row in per_seed.values())
    means = _means(per_seed)
    detail = f"at {common:,.0f} gradient evaluations, mean over seeds " + ", ".join(
        map(str, per_seed)) + ": " + "; ".join(
        f"{label}: SVRG {means[f'{net}_{norm}_svrg']:.4f}, SGD {means[f'{net}_{norm}_sgd']:.4f} "
        f"(gap {means[f'{net}_{norm}_svrg'] - means[f'{net}_{norm}_sgd']:+.4f})"
        for label, norm in (("BN", "bn"), ("no BN", "none"))
    )  # fmt: skip
    return Measurement(values, detail, means)


CLAIMS = (
    Claim(
        "lenet_vr",
        "On LeNet/MNIST, the variance-reduced methods (SVRG, STORM) end with a "
        "test loss at least as low as SGD's and Adam's at equal gradient evaluations",
        "Sec. 4.1, Fig. 4.4",
        Effect(
            "per seed, the better test loss of SGD and Adam minus the worse of SVRG and STORM, "
            "at the largest gradient-evaluation count every selected run reaches",
            0.0,
            ">",
            "nats",
        ),
        measure_lenet,
        profiles=("quick", "full"),
        scale_note="LeNet-5 / MNIST is not in the medium profile: only MNIST's 10,000 test "
        "images are here, which the quick profile trains on already (svrg_medium.yaml)",
    ),
    Claim(
        "bn_gap",
        "SVRG's gap to SGD is smaller without batch norm than with it (ResNet-18, CIFAR-10)",
        "Sec. 4.2.1-4.2.2, Figs. 4.8-4.9",
        Effect(
            "per seed, SVRG's test-loss gap to SGD (selected lrs, equal gradient evaluations) "
            "with BN minus without",
            0.0,
            ">",
            "nats",
        ),
        measure_bn_gap,
    ),
    Claim(
        "bn_gap_resnet101",
        "The same on ResNet-101 / CIFAR-100",
        "Sec. 4.2.3-4.2.4, Figs. 4.12-4.13",
        Effect("as bn_gap, on ResNet-101", 0.0, ">", "nats"),
        lambda r: measure_bn_gap(r, "resnet101"),
        profiles=("full",),
        scale_note="ResNet-101 / CIFAR-100 runs only in the full profile",
    ),
)


PAPER = Paper(
    name="svrg",
    title="Apostolov 2021 (SVRG, STORM on DNNs)",
    citation='Apostolov, "Stochastic variance reduced gradient methods for training Deep Neural '
    'Networks", EPFL MSc project report, 2021 (Sec. 4.1-4.3, Tables 4.1-4.8, Figures 4.3-4.14)',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/{point}/{split}/seed{seed}",
    prepare=prepare,
    setting="the report trains LeNet-5 on MNIST's 60,000 images for 100 epochs (batch 32) and "
    "ResNet-18 (width 64) on CIFAR-10 for 200 epochs and ResNet-101 on CIFAR-100 for 150 (batch "
    "128), one GPU, fixed seed 1, 4-fold cross-validation of its grids (Tables 4.1, 4.3, 4.6). "
    "The quick profile: LeNet-5 on 8,000 of MNIST's test images for 15 epochs, ResNet-18 at "
    "width 8 on 5,000 CIFAR-10 images for 10 epochs, two grid points per optimizer, 2 folds, "
    "SVRG's snapshot every 2 epochs instead of 5, no ResNet-101; the compared cells at seeds "
    "1-3",
)

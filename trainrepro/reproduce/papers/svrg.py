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
from matplotlib.figure import Figure as MplFigure

from trainrepro.analysis.cv import fold_overrides, point_name
from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import (
    FAIL,
    NOT_CHECKED,
    NOT_SHOWN,
    PASS,
    Claim,
    Figure,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    Verdict,
    fmt,
)  # fmt: skip

SEED = 1  # Sec. 4.1: "a fixed seed set to 1"
# Compared cells run at three seeds, so a claim rests on a mean and its interval, not one run.
SEEDS = (1, 2, 3)
COMPARED = ("sgd", "svrg")  # the ResNet optimizers the claims compare
LABELS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adagrad": "AdaGrad",
    "svrg": "SVRG",
    "storm": "STORM",
    "metainit": "SVRG after MetaInit",
}
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
        note="2 CPU cores, 32 min (measured; 57 min of runs over 2 workers): LeNet-5 on "
        "8,000 of MNIST's test images (dataset.split_test_set=true), 2 grid points per "
        "optimizer x (2 folds + test run), 15 epochs; ResNet-18 at width 8 on 5,000 CIFAR-10 "
        "images, BN and none, 2 lrs per optimizer, 10 epochs; MetaInit on the no-BN SVRG run",
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
            selected[preset] = {
                "point": point,
                "val_loss_mean": mean,
                "val_loss_std": std,
                "folds": n,
                "run_dir": f"{preset}/{point}/{test}/seed{SEED}",
            }
    res.extras["selected"] = selected
    res.out.mkdir(parents=True, exist_ok=True)
    (res.out / "selected.json").write_text(json.dumps(selected, indent=2, default=float) + "\n")


def curve(res: Results, run_dir: str) -> pd.DataFrame:
    return res.df[res.df["run_dir"] == run_dir].sort_values("epoch")


def loss_at(res: Results, run_dir: str, evals: float) -> float:
    """Test loss at ``evals`` gradient evaluations, linear between epochs."""
    c = curve(res, run_dir)
    x, y = c["grad_evals"].astype(float).to_numpy(), c["test_loss"].astype(float).to_numpy()
    if not len(x) or evals < x[0] or evals > x[-1]:
        return math.nan
    return float(np.interp(evals, x, y))


def compare(res: Results, presets: list[str]) -> tuple[float, dict[str, float]] | None:
    """The largest common gradient-evaluation count of the presets' selected runs, and each
    one's test loss there; None when one has no selected run."""
    chosen = res.extras.get("selected", {})
    if any(p not in chosen for p in presets):
        return None
    runs = {p: chosen[p]["run_dir"] for p in presets}
    common = min(float(curve(res, r)["grad_evals"].max()) for r in runs.values())
    return common, {p: loss_at(res, r, common) for p, r in runs.items()}


def check_lenet(res: Results) -> Verdict:
    got = compare(res, [f"lenet_{o}" for o in ("sgd", "adam", "svrg", "storm")])
    if got is None:
        return Verdict(NOT_CHECKED, "a LeNet optimizer has no selected grid point (runs missing)")
    common, loss = got
    vr, base = (
        max(loss["lenet_svrg"], loss["lenet_storm"]),
        min(loss["lenet_sgd"], loss["lenet_adam"]),
    )
    detail = (
        f"test loss at {common:,.0f} gradient evaluations (the shortest selected run's "
        "end): " + ", ".join(f"{LABELS[p[6:]]} {v:.4f}" for p, v in loss.items())
    )
    ok = vr <= base
    if not ok and res.profile == "quick":
        return Verdict(
            NOT_SHOWN,
            detail + f"; the report's crossover comes late in 100 epochs "
            f"(Fig. 4.4), these runs have {int(res.df['epoch'].max())}",
            loss,
        )
    return Verdict(PASS if ok else FAIL, detail, loss)


def gap(res: Results, net: str, norm: str) -> tuple[float, float, dict[str, float]] | None:
    got = compare(res, [f"{net}_{norm}_svrg", f"{net}_{norm}_sgd"])
    if got is None:
        return None
    common, loss = got
    return loss[f"{net}_{norm}_svrg"] - loss[f"{net}_{norm}_sgd"], common, loss


def check_bn_gap(res: Results, net: str = "resnet18") -> Verdict:
    bn, none = gap(res, net, "bn"), gap(res, net, "none")
    if bn is None or none is None:
        return Verdict(NOT_CHECKED, f"{net}: SGD or SVRG has no selected lr (runs missing)")
    detail = "; ".join(
        f"{label}: SVRG − SGD test loss {g:+.4f} at {c:,.0f} gradient evaluations "
        f"(SVRG {loss[f'{net}_{norm}_svrg']:.4f}, SGD {loss[f'{net}_{norm}_sgd']:.4f})"
        for label, norm, (g, c, loss) in (("BN", "bn", bn), ("no BN", "none", none))
    )
    return Verdict(PASS if none[0] < bn[0] else FAIL, detail, {"bn": bn[0], "none": none[0]})


CLAIMS = (
    Claim(
        "lenet_vr",
        "On LeNet/MNIST, the variance-reduced methods (SVRG, STORM) end with a "
        "test loss at least as low as SGD's and Adam's at equal gradient evaluations",
        "Sec. 4.1, Fig. 4.4",
        "at the largest gradient-evaluation count every selected run "
        "reaches, the worse of SVRG and STORM has a test loss <= the better of SGD and Adam",
        check_lenet,
    ),
    Claim(
        "bn_gap",
        "SVRG's gap to SGD is smaller without batch norm than with it (ResNet-18, CIFAR-10)",
        "Sec. 4.2.1-4.2.2, Figs. 4.8-4.9",
        "test loss of SVRG minus SGD's "
        "(selected lrs, at equal gradient evaluations) is lower with normalization=none than "
        "with bn",
        check_bn_gap,
    ),
    Claim(
        "bn_gap_resnet101",
        "The same on ResNet-101 / CIFAR-100",
        "Sec. 4.2.3-4.2.4, Figs. 4.12-4.13",
        "as bn_gap, on ResNet-101",
        lambda r: check_bn_gap(r, "resnet101"),
        profiles=("full",),
        scale_note="ResNet-101 / CIFAR-100 runs only in the full profile",
    ),
)


def table(res: Results) -> str:
    chosen = res.extras.get("selected", {})
    lines = [
        f"# Apostolov 2021 (SVRG, STORM on DNNs) ({res.name})",
        "",
        "| setting | optimizer | grid points | selected | val. loss (mean ± std, n) | report's "
        "choice | test loss (end) | test acc. (%) | grad. evals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in dict.fromkeys(res.df["preset"]):
        setting, opt = preset.rsplit("_", 1)
        sel = chosen.get(preset)
        n_points = res.df.loc[res.df["preset"] == preset, "point"].nunique()
        paper = _PAPER.get(f"{setting.replace('_', '.')}.{opt}")
        row = [setting, LABELS.get(opt, opt), str(n_points)]
        if sel is None:
            lines.append(
                "| "
                + " | ".join([*row, "—", "—", paper.shown if paper else "—", "—", "—", "—"])
                + " |"
            )
            continue
        end = curve(res, sel["run_dir"]).tail(1)
        last = end.iloc[0] if len(end) else None
        row += [
            sel["point"],
            f"{fmt(sel['val_loss_mean'], 4)} ± {fmt(sel['val_loss_std'], 4)} ({sel['folds']})",
            f"{paper.shown} ({paper.source})" if paper else "—",
            fmt(last["test_loss"], 4) if last is not None else "—",
            fmt(last["test_acc"]) if last is not None else "—",
            f"{last['grad_evals']:,.0f}" if last is not None else "—",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Selected: the grid point with the lowest final validation loss (LeNet: mean over "
        "the folds; ResNet: the 5% split), among points whose every run completed. Test loss: the "
        "selected point's test run (LeNet: trained on the whole training split) at its last epoch. "
        "`*_metainit`: SVRG on the no-BN net after MetaInit (Sec. 4.3), at one lr. The report "
        "prints no losses as numbers (figures only): the paper column holds its selected values.",
    ]
    if res.profile == "quick":
        lines += [
            "",
            "Quick profile: MNIST train/test split from the 10,000-image test set "
            "(dataset.split_test_set=true); not comparable to published MNIST numbers.",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(res: Results, prefix, settings: tuple[str, ...]) -> object:
    """Test loss against gradient evaluations of each optimizer's selected run, one panel per
    setting; without a selection (no validation losses), every test/val run, thin."""
    chosen = res.extras.get("selected", {})
    present = set(res.df["setting"])
    shown = [s for s in settings if s in present] or list(settings[:1])
    fig = MplFigure(figsize=(5 * len(shown), 3.8), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, setting in zip(axes, shown, strict=True):
        mine = {p: sel["run_dir"] for p, sel in chosen.items() if p.startswith(setting + "_")}
        thin = not mine
        if thin:  # nothing selected: show every run that is evaluated on the test set
            sub = res.df[
                res.df["preset"].str.startswith(setting + "_") & (res.df["split"] != "fold0")
            ]
            mine = {
                d: d
                for d in dict.fromkeys(sub.loc[~sub["split"].str.startswith("fold"), "run_dir"])
            }
        for i, run_dir in enumerate(mine.values()):
            c = curve(res, run_dir)
            name = run_dir.split("/")[0]
            label = f"{LABELS.get(name.rsplit('_', 1)[1], name)} ({run_dir.split('/')[1]})"
            ax.plot(c["grad_evals"], c["test_loss"], color=f"C{i % 10}", marker=".",
                    lw=0.8 if thin else 1.5, label=label)  # fmt: skip
        ax.set(title=setting + (" (no selection)" if thin else ""),
               xlabel="gradient evaluations", ylabel="test loss")  # fmt: skip
        ax.grid(alpha=0.3)
        if mine:
            ax.legend(fontsize=6 if thin else 8)
    return save(fig, prefix, tight=True)


FIGURES = (
    Figure(
        "lenet_test_loss",
        "Figure 4.4: test loss against gradient evaluations of each "
        "optimizer's selected setting, LeNet-5 on MNIST",
        lambda r, p: plot_curves(r, p, ("lenet",)),
    ),
    Figure(
        "resnet_test_loss",
        "Figures 4.8-4.9 (and 4.12-4.13 in the full profile): test loss "
        "against gradient evaluations, ResNet with BN and without (none)",
        lambda r, p: plot_curves(
            r, p, ("resnet18_bn", "resnet18_none", "resnet101_bn", "resnet101_none")
        ),
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
)

"""The svrg report's table and figures (the declaration is svrg.py): each optimizer's selected
grid point with its test loss and accuracy over seeds, and test loss against gradient
evaluations, as the report's Figures 4.4 and 4.8-4.9."""

from __future__ import annotations

import json

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import save
from trainrepro.reproduce.paper import Figure, Results, fmt

LABELS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adagrad": "AdaGrad",
    "svrg": "SVRG",
    "storm": "STORM",
    "metainit": "SVRG after MetaInit",
}


def curve(res: Results, run_dir: str) -> pd.DataFrame:
    return res.df[res.df["run_dir"] == run_dir].sort_values("epoch")


def _mean_sd(ends: pd.DataFrame | None, column: str, digits: int) -> str:
    if ends is None or column not in ends:
        return "—"
    v = ends[column].astype(float)
    sd = f" ± {fmt(float(v.std()), digits)}" if len(v) > 1 else ""
    return f"{fmt(float(v.mean()), digits)}{sd} ({len(v)})"


def table(res: Results) -> str:
    chosen = res.extras.get("selected", {})
    numbers = {n.key: n for n in res.paper.numbers}
    lines = [
        f"# Apostolov 2021 (SVRG, STORM on DNNs) ({res.name})",
        "",
        "| setting | optimizer | grid points | selected | val. loss (mean ± std, n) | report's "
        "choice | test loss (end; mean ± std, seeds) | test acc. (%) | grad. evals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in dict.fromkeys(res.df["preset"]):
        setting, opt = preset.rsplit("_", 1)
        sel = chosen.get(preset)
        n_points = res.df.loc[res.df["preset"] == preset, "point"].nunique()
        paper = numbers.get(f"{setting.replace('_', '.')}.{opt}")
        row = [setting, LABELS.get(opt, opt), str(n_points)]
        if sel is None:
            lines.append(
                "| "
                + " | ".join([*row, "—", "—", paper.shown if paper else "—", "—", "—", "—"])
                + " |"
            )
            continue
        ends = [curve(res, r).tail(1) for r in sel.get("run_dirs", {}).values()]
        ends = pd.concat([e for e in ends if len(e)]) if any(len(e) for e in ends) else None
        row += [
            sel["point"],
            f"{fmt(sel['val_loss_mean'], 4)} ± {fmt(sel['val_loss_std'], 4)} ({sel['folds']})",
            f"{paper.shown} ({paper.source})" if paper else "—",
            _mean_sd(ends, "test_loss", 4),
            _mean_sd(ends, "test_acc", 2),
            f"{ends['grad_evals'].max():,.0f}" if ends is not None else "—",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Selected: the grid point with the lowest final validation loss (LeNet: mean over "
        "the folds, at seed 1; ResNet: the 5% split, mean over seeds), among points whose every "
        "run completed. Test loss and accuracy: the selected point's test runs (LeNet: trained on "
        "the whole training split) at their last epoch, mean ± std over seeds (n). "
        "`*_metainit`: SVRG on the no-BN net after MetaInit (Sec. 4.3), at one lr. The report "
        "prints no losses as numbers (figures only): the paper column holds its selected values.",
    ]
    if res.profile == "quick":
        lines += [
            "",
            "Quick profile: MNIST train/test split from the 10,000-image test set "
            "(dataset.split_test_set=true); not comparable to published MNIST numbers.",
        ]
    lines += _metainit_note(res)
    return "\n".join(lines) + "\n"


def _metainit_note(res: Results) -> list[str]:
    """What MetaInit did to the no-BN net before training, from ``metainit_probe.json``
    (written by scripts/metainit_probe.py, whose command it records)."""
    path = res.out / "metainit_probe.json"
    if not path.is_file():
        return []
    rec = json.loads(path.read_text())
    before, after = rec["before"], rec["after"]
    ratios = sorted((after["norms"][k] / before["norms"][k], k) for k in before["norms"])
    shrunk = ", ".join(f"{k} to {r:.0%}" for r, k in ratios[:2])
    mi = rec["metainit"]
    return [
        "",
        f"MetaInit on the no-BN net, before training (`python scripts/metainit_probe.py "
        f"{' '.join(rec['overrides'])}`, `metainit_probe.json`): the gradient quotient falls "
        f"from {mi['gq_before']:.4g} to {mi['gq_after']:.3g} in {mi['steps_run']} steps by "
        f"shrinking a few weight tensors ({shrunk} of their norm), which makes the network "
        f"nearly constant: the logits' spread on a training batch falls from "
        f"{before['logits_std']:.3g} to {after['logits_std']:.3g}, the loss sits at "
        f"{after['loss']:.4f} (chance is ln 10 = 2.3026) and the gradient norm falls from "
        f"{before['grad_norm']:.3g} to {after['grad_norm']:.3g}. That is a degenerate minimum "
        "of the gradient quotient, not a bug of SVRG: the `_metainit` run starts on that "
        "plateau, and its accuracy says whether training left it.",
    ]


def plot_curves(res: Results, prefix, settings: tuple[str, ...]) -> object:
    """Test loss against gradient evaluations of each optimizer's selected run, one panel per
    setting; without a selection (no validation losses), every test/val run, thin."""
    chosen = res.extras.get("selected", {})
    present = set(res.df["setting"])
    if not present & set(settings):  # the medium profile runs no LeNet: no empty panel
        return None
    shown = [s for s in settings if s in present] or list(settings[:1])
    fig = MplFigure(figsize=(5 * len(shown), 3.8), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, setting in zip(axes, shown, strict=True):
        mine = {
            p: list(sel.get("run_dirs", {}).values()) or [sel["run_dir"]]
            for p, sel in chosen.items()
            if p.startswith(setting + "_")
        }
        thin = not mine
        if thin:  # nothing selected: show every run that is evaluated on the test set
            sub = res.df[
                res.df["preset"].str.startswith(setting + "_") & (res.df["split"] != "fold0")
            ]
            mine = {
                d: [d]
                for d in dict.fromkeys(sub.loc[~sub["split"].str.startswith("fold"), "run_dir"])
            }
        for i, run_dirs in enumerate(mine.values()):
            name, point = run_dirs[0].split("/")[:2]
            seeds = f", {len(run_dirs)} seeds" if len(run_dirs) > 1 else ""
            label = f"{LABELS.get(name.rsplit('_', 1)[1], name)} ({point}{seeds})"
            for k, run_dir in enumerate(run_dirs):  # every seed, one colour per optimizer
                c = curve(res, run_dir)
                ax.plot(c["grad_evals"], c["test_loss"], color=f"C{i % 10}", marker=".",
                        lw=0.8 if thin or k else 1.5, label=None if k else label)  # fmt: skip
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

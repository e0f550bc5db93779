"""Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018), on
CIFAR-10 at kuangliu/pytorch-cifar's schedule: Figure 6's two ablations (linear against ReLU6
bottleneck; shortcuts between bottlenecks against between expansions) and MobileNetV2 against
ResNet-18 at a fraction of its multiply-adds.

Runs: conf/experiment/mobilenetv2/<preset>.yaml, in runs/mobilenetv2[-quick]/<preset>/seed<k>.
Claims: per seed, final test accuracy differences, paired by seed (mobilenetv2_claims.py).
"""

from __future__ import annotations

from pathlib import Path

from trainrepro.reproduce.figures import loss_and_accuracy
from trainrepro.reproduce.paper import (
    Figure,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    fmt,
    unfinished_lines,
)
from trainrepro.reproduce.papers.mobilenetv2_claims import CLAIMS, LABELS, cost

NUMBERS = (  # kuangliu's README table [V]; its MobileNetV2 has 1x1-conv shortcuts (papers.md 8)
    PaperNumber("mobilenetv2.acc", 94.43, "94.43 [V]", "kuangliu/pytorch-cifar README"),
    PaperNumber("resnet18.acc", 93.02, "93.02", "kuangliu/pytorch-cifar README"),
)
_PAPER = {n.key.split(".")[0]: n for n in NUMBERS}

PAIRED = ("mobilenetv2", "relu6", "expansion", "resnet18")  # compared by seed: 3 seeds
SINGLE = ("mobilenetv2_075", "mobilenetv2_05", "wrn16_4")  # table rows: 1 seed
PRESETS = PAIRED + SINGLE


def _runs(paired: tuple[str, ...], single: tuple[str, ...]) -> tuple[Run, ...]:
    """Seed by seed (whole seeds first), the dearest models first in each."""
    return tuple(Run(f"{p}/seed{s}", p, s) for s in range(3) for p in paired) + tuple(
        Run(f"{p}/seed0", p, 0) for p in single
    )


PROFILES = {
    "full": Profile("full", _runs(PAIRED, SINGLE), note="GPU, 15 runs of 200 epochs"),
    "quick": Profile(
        "quick",
        _runs(("mobilenetv2", "relu6", "expansion"), ()),
        config=("profile=mobilenetv2_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 43 min wall (measured beside other work: "
        "conf/profile/mobilenetv2_quick.yaml): the two ablations only, MobileNetV2 at width "
        "0.25 on 5,000 images for 15 epochs, 3 seeds each; ResNet-18 not run",
    ),
    "medium": Profile(
        "medium",
        _runs(PAIRED, SINGLE),
        config=("profile=mobilenetv2_medium",),
        jobs=8,
        threads=2,
        note="one GPU, 8 runs at a time, ~6 min (an estimate from issue 20's H200 measurement, "
        "not measured: conf/profile/mobilenetv2_medium.yaml): every model at full width on all "
        "50,000 images for 6 epochs",
    ),
}

SETTING = (
    "the paper trains on ImageNet (RMSProp, batch 96 on 16 GPUs [R]) and shows Figure 6's "
    "ablations there; the CIFAR-10 numbers are kuangliu/pytorch-cifar's (MobileNetV2 94.43% "
    "[V], ResNet-18 93.02%), whose MobileNetV2 adds 1x1-conv shortcuts where the paper has "
    "none (2,296,922 params against this package's 2,236,682) and uses ReLU, not ReLU6. Every "
    "profile here trains on kuangliu's schedule: SGD lr 0.1, momentum 0.9, wd 5e-4, cosine, "
    "batch 128, crop + flip. The full profile: 200 epochs, all 50,000 images. The medium "
    "profile: the same runs for 6 epochs. The quick profile runs only the ablations, at width "
    "0.25 on a stratified 5,000 images for 15 epochs (each evaluation on a fixed 2,000 of the "
    "test images), bf16 on 2 CPU cores: ResNet-18 (555M MAdds an image) does not fit it."
)


def table(res: Results) -> str:
    """Per model: final test accuracy, parameters and MAdds, beside kuangliu's numbers."""
    final = res.final()
    config = res.paper.profiles[res.profile].config
    lines = [
        f"# Sandler et al. 2018 (MobileNetV2) on CIFAR-10 ({res.name})",
        "",
        "| model | seeds | final test acc. (%) mean ± std | parameters | MAdds / image "
        "| kuangliu (%) |",
        "|---|---|---|---|---|---|",
    ]
    for preset in PRESETS:
        sub = final[(final["preset"] == preset) & (final["status"] == "completed")]
        if sub.empty:
            continue
        acc = sub["test_acc"].astype(float)
        std = f" ± {fmt(acc.std())}" if len(acc) > 1 else ""
        c = cost(preset, config)
        paper = _PAPER.get(preset)
        lines.append(
            f"| {LABELS[preset]} | {len(sub)} | {fmt(acc.mean())}{std} | {c['params']:,} | "
            f"{c['madds'] / 1e6:,.1f}M | {f'{paper.shown} ({paper.source})' if paper else '—'} |"
        )
    lines += [
        "",
        "Accuracy: the last epoch's, over completed runs. Parameters and MAdds: `trainrepro",
        "params` of the model as run (trainrepro/analysis/params.py). kuangliu's numbers: 350",
        "epochs (step schedule) for the MobileNetV2 row, a MobileNetV2 with 1x1-conv shortcuts.",
    ]
    lines += unfinished_lines(final)
    return "\n".join(lines) + "\n"


def plot_curves(res: Results, prefix: Path) -> object:
    """Training loss and test accuracy per epoch of every model (mean over seeds)."""
    return loss_and_accuracy(res.df, LABELS, "MobileNetV2, its ablations and the baselines "
                             "(mean over seeds)", prefix)  # fmt: skip


FIGURES = (
    Figure("curves", "Training loss and test accuracy per epoch of every model (mean over "
           "seeds): Figure 6's ablations beside ResNet-18 and WRN-16-4", plot_curves),
)  # fmt: skip

PAPER = Paper(
    name="mobilenetv2",
    title="Sandler et al. 2018 (MobileNetV2)",
    citation='Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and '
    'Linear Bottlenecks", CVPR 2018 (Figure 6; CIFAR-10 numbers: kuangliu/pytorch-cifar)',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/seed{seed}",
    setting=SETTING,
)

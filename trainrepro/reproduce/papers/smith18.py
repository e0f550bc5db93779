"""Smith, Kindermans, Ying & Le, "Don't Decay the Learning Rate, Increase the Batch Size"
(ICLR 2018), CIFAR-10 (Sec. 5.1-5.2, Figures 1-5): a step schedule that multiplies the batch
size by 5 where it would divide the lr by 5 reaches the same test accuracy in fewer updates.

Runs: conf/experiment/smith18/<preset>.yaml, in runs/smith18[-quick]/<preset>/seed<k>.
"""

from __future__ import annotations

import math
from functools import cache

import pandas as pd

from trainrepro.reproduce.paper import (
    FAIL,
    NOT_CHECKED,
    PASS,
    Claim,
    Paper,
    PaperNumber,
    Profile,
    Results,
    Run,
    Verdict,
)
from trainrepro.reproduce.papers.smith18_figures import (
    FIG5,
    FIGURES,
    MAIN,
    OPTIMIZERS,
    SCHEDULES,
    label,
    panels,
)

PRESETS = (*(f"{o}_{s}" for o in OPTIMIZERS for s in SCHEDULES), *(p for p, _ in FIG5[1:]))
CIFAR10_TRAIN = 50_000  # the full profile trains on all of it
# Acceptance (issue of the reproduction, for the main schedules, SGD with momentum)
MAX_ACC_GAP = 2.0  # points between the three schedules' mean final test accuracies
MAX_UPDATE_RATIO = 0.45  # increase_batch updates / decay_lr updates

# The numbers the paper states in its text, all at full scale (WRN-16-4, 50k images, 200
# epochs); its other CIFAR-10 curves are given only as figures.
NUMBERS = tuple(
    n
    for preset, shown, updates, acc in (
        ("momentum_decay_lr", "~80,000", 80_000, 94.3),
        ("fig5_increase_batch", "~29,000", 29_000, 94.4),
        ("fig5_increased_lr", "<6,500", 6_500, 94.5),
        ("fig5_increased_momentum", "<2,500", 2_500, 93.3),
    )
    for n in (
        PaperNumber(f"{preset}.updates", updates, shown, "Sec. 5.2, Fig. 5"),
        PaperNumber(f"{preset}.acc", acc, f"{acc}", "Sec. 5.2, Fig. 5"),
    )
)
_PAPER = {n.key: n for n in NUMBERS}


def _runs(presets: tuple[str, ...], seeds: tuple[int, ...]) -> tuple[Run, ...]:
    return tuple(Run(f"{p}/seed{s}", p, s) for p in presets for s in seeds)


PROFILES = {
    "full": Profile(
        "full", _runs(tuple(sorted(PRESETS)), (0, 1, 2)), note="GPU, 15 presets × 3 seeds"
    ),
    # Longest first; two single-threaded runs at a time use both cores best. 21 min in bf16.
    "quick": Profile(
        "quick",
        _runs(MAIN, (0, 1)) + _runs(tuple(p for p, _ in FIG5[1:]), (0,)),
        config=("profile=smith18_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 21 min (measured): the momentum schedules × 2 seeds and the "
        "Figure 5 runs",
    ),
}


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per preset: seeds, updates, final test accuracy over its completed runs."""
    last = df.sort_values("epoch").groupby("run_dir", sort=False).tail(1)
    epochs = df.groupby("run_dir")["epochs"].first() if "epochs" in df else None
    rows = []
    for preset, runs in last.groupby("preset", sort=False):
        done = runs[runs["status"] == "completed"]
        acc = done["test_acc"]
        unfinished = [
            f"{r.run_dir.rsplit('/', 1)[-1]} ({r.status}, epoch {r.epoch}"
            + (f"/{epochs[r.run_dir]}" if epochs is not None else "")
            + ")"
            for r in runs.itertuples()
            if r.status != "completed"
        ]
        rows.append(
            {
                "preset": preset,
                "seeds": len(done),
                "updates": int(done["updates"].max()) if len(done) else None,
                "acc_mean": acc.mean() if len(acc) else math.nan,
                "acc_std": acc.std() if len(acc) > 1 else math.nan,
                "acc_min": acc.min() if len(acc) else math.nan,
                "acc_max": acc.max() if len(acc) else math.nan,
                "unfinished": ", ".join(unfinished),
            }
        )
    return pd.DataFrame(rows).set_index("preset") if rows else pd.DataFrame()


def _has(summary: pd.DataFrame, presets: tuple[str, ...] | list[str]) -> bool:
    return all(p in summary.index and summary.loc[p, "seeds"] for p in presets)


def _known(value: object) -> bool:
    """A count that is there: not None/NaN (no completed run) and not 0."""
    return value is not None and not pd.isna(value) and bool(value)


@cache
def planned_full_updates(preset: str) -> int | None:
    """Updates of the preset at full scale, from its config alone (no data, no training)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from torch import nn

    from trainrepro.config import CONF_DIR, instantiate
    from trainrepro.engine.build import epoch_batch_sizes, make_schedule

    if not (CONF_DIR / "experiment" / "smith18" / f"{preset}.yaml").is_file():
        return None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment=smith18/{preset}"])
    GlobalHydra.instance().clear()
    schedule = make_schedule(cfg, instantiate("optimizer", cfg.optimizer, nn.Linear(1, 1)))
    n_train = cfg.dataset.train_size or CIFAR10_TRAIN
    return sum(n_train // b for b in epoch_batch_sizes(schedule, cfg.epochs, n_train))


def _acc(row: pd.Series) -> str:
    if not row["seeds"]:
        return "—"
    text = f"{row['acc_mean']:.2f}"
    if row["seeds"] > 1:
        text += f" ± {row['acc_std']:.2f} ({row['acc_min']:.2f}–{row['acc_max']:.2f})"
    return text


def _reference(preset: str) -> str:
    """The run whose updates a preset is compared with: its optimizer's decay_lr run."""
    prefix = preset.split("_", 1)[0]
    return "momentum_decay_lr" if prefix == "fig5" else f"{prefix}_decay_lr"


def table(res: Results) -> str:
    """Per preset: updates, final test accuracy over seeds, and the paper's numbers."""
    summary = summarize(res.df)
    known = [p for _, ps, _ in panels("epoch") for p in ps]
    first = list(dict.fromkeys(p for p in known if p in summary.index))
    lines = [
        f"# Smith et al. 2018 on CIFAR-10 ({res.name})",
        "",
        "| preset | curve | seeds | updates | ÷ decay_lr | final test acc. (%) mean ± std (range) "
        "| full-scale plan | paper updates | ÷ original | paper acc. (%) |",
        "|" + "---|" * 10,
    ]
    unfinished = []
    original = _PAPER["momentum_decay_lr.updates"].value
    for preset in first + sorted(set(summary.index) - set(first)):
        row = summary.loc[preset]
        ratio, ref_updates = "—", summary["updates"].get(_reference(preset))
        if _known(row["updates"]) and _known(ref_updates):
            ratio = f"{row['updates'] / ref_updates:.3f}"
        upd, acc = _PAPER.get(f"{preset}.updates"), _PAPER.get(f"{preset}.acc")
        updates = f"{int(row['updates']):,}" if _known(row["updates"]) else "—"
        full = planned_full_updates(preset)
        lines.append(
            f"| {preset} | {label(preset)} | {int(row['seeds'])} | {updates} | {ratio} "
            f"| {_acc(row)} | {f'{full:,}' if full else '—'} "
            f"| {upd.shown if upd else 'figure only'} "
            f"| {f'{upd.value / original:.3f}' if upd else '—'} | {acc.shown if acc else '—'} |"
        )
        if row["unfinished"]:
            unfinished.append(f"- {preset}: {row['unfinished']}")
    lines += [
        "",
        "Updates: parameter updates of one run (the same for every seed; floor(N/B) per epoch). "
        "Full-scale plan: the preset's updates without the quick profile (WRN-16-4, 50k images, "
        "200 epochs), counted from its schedule. "
        "÷ decay_lr: against the same optimizer's decay_lr run (Figure 5 runs: against "
        "momentum_decay_lr, the paper's original schedule). Accuracy: the last epoch's, over "
        "completed runs only. Paper numbers: Sec. 5.2 / Figure 5 (WRN-16-4, all 50k images, "
        "200 epochs); the other curves are given in the paper only as figures.",
    ]
    if unfinished:
        lines += ["", "## Unfinished runs (left out of the accuracies)", "", *unfinished]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- claims
def _gap(summary: pd.DataFrame, presets: list[str]) -> float:
    means = summary.loc[presets, "acc_mean"]
    return float(means.max() - means.min())


def check_equal_accuracy(res: Results) -> Verdict:
    summary = summarize(res.df)
    if not _has(summary, MAIN):
        return Verdict(NOT_CHECKED, "the three momentum schedules have no completed runs yet")
    gap = _gap(summary, list(MAIN))
    means = {p: float(summary.loc[p, "acc_mean"]) for p in MAIN}
    detail = (
        f"final test accuracy, max − min of the three schedules' means: {gap:.2f} points "
        f"(needs ≤ {MAX_ACC_GAP:g}; means "
        + ", ".join(f"{label(p)} {m:.2f}" for p, m in means.items())
        + ")"
    )
    return Verdict(PASS if gap <= MAX_ACC_GAP else FAIL, detail, {"gap": gap, **means})


def check_fewer_updates(res: Results) -> Verdict:
    summary = summarize(res.df)
    pair = ["momentum_decay_lr", "momentum_increase_batch"]
    if not _has(summary, pair):
        return Verdict(NOT_CHECKED, "decay_lr or increase_batch (momentum) has no completed run")
    ups = [int(summary.loc[p, "updates"]) for p in pair]
    ratio = ups[1] / ups[0]
    detail = (
        f"updates, increase_batch ÷ decay_lr: {ratio:.3f} ({ups[1]:,} ÷ {ups[0]:,}; needs ≤ "
        f"{MAX_UPDATE_RATIO:g}; paper ~29,000 ÷ ~80,000 ≈ 0.36)"
    )
    return Verdict(PASS if ratio <= MAX_UPDATE_RATIO else FAIL, detail, {"ratio": ratio})


def check_other_optimizers(res: Results) -> Verdict:
    summary = summarize(res.df)
    gaps = {}
    for prefix in list(OPTIMIZERS)[1:]:
        presets = [f"{prefix}_{s}" for s in SCHEDULES]
        if not _has(summary, presets):
            return Verdict(NOT_CHECKED, f"the {prefix} schedules have no completed runs yet")
        gaps[prefix] = _gap(summary, presets)
    detail = "max − min of the three schedules' means: " + ", ".join(
        f"{OPTIMIZERS[p][0]} {g:.2f} points" for p, g in gaps.items()
    )
    ok = all(g <= MAX_ACC_GAP for g in gaps.values())
    return Verdict(PASS if ok else FAIL, f"{detail} (each needs ≤ {MAX_ACC_GAP:g})", gaps)


CLAIMS = (
    Claim(
        "equal_accuracy",
        "Increasing the batch size (or a hybrid) instead of decaying the learning rate reaches "
        "the same test accuracy (SGD with momentum)",
        "Sec. 5.1, Figs. 2-3a",
        f"the three schedules' mean final test accuracies lie within {MAX_ACC_GAP:g} points",
        check_equal_accuracy,
    ),
    Claim(
        "fewer_updates",
        "Increasing the batch size takes far fewer parameter updates than decaying the "
        "learning rate",
        "Sec. 5.1-5.2, Figs. 2b, 5",
        f"increase_batch needs ≤ {MAX_UPDATE_RATIO:g} × the updates of decay_lr",
        check_fewer_updates,
    ),
    Claim(
        "other_optimizers",
        "The same equivalence holds for Nesterov momentum, vanilla SGD and Adam",
        "Sec. 5.1, Figs. 3b, 4",
        f"for each, the three schedules' means lie within {MAX_ACC_GAP:g} points",
        check_other_optimizers,
        profiles=("full",),
        scale_note="the quick profile runs only SGD with momentum (time)",
    ),
)


PAPER = Paper(
    name="smith18",
    title="Smith et al. 2018",
    citation="Smith, Kindermans, Ying & Le, \"Don't Decay the Learning Rate, Increase the Batch "
    'Size", ICLR 2018 (CIFAR-10, Figures 1-5)',
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/seed{seed}",
)

"""Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR 2017):
WRN-28-10 on CIFAR-10 and CIFAR-100, the step schedule against SGDR (T_0 = 1 and 10, T_mult =
2), the anytime curve, and ensembles of the snapshots taken at SGDR's restarts.

Runs: conf/experiment/sgdr/<preset>.yaml, in runs/sgdr[-quick]/<folder>/<dataset>/seed<k>. The
snapshot ensembles need no run of their own: ``prepare`` evaluates each finished SGDR run's
snapshots (trainrepro/analysis/ensemble.py, as ``trainrepro ensemble RUN_DIR``) and keeps the
rows in ensembles.csv beside runs.csv. Claims: sgdr_claims.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from trainrepro.reproduce.data import file_digest, save
from trainrepro.reproduce.paper import Figure, Paper, PaperNumber, Profile, Results, Run, fmt
from trainrepro.reproduce.papers.sgdr_claims import (
    CLAIMS,
    ENSEMBLE,
    STEPS,
    anytime_effects,
    first_epoch,
)
from trainrepro.reproduce.speed import Row, ended, lines, mean_final

ENSEMBLE_FILE = "ensembles.csv"
SEEDS = range(5)
LABELS = {  # run folder -> label
    "step_lr0.1": "step, lr 0.1",
    "step_lr0.05": "step, lr 0.05",
    "sgdr_t0_1": "SGDR T_0 = 1, T_mult = 2",
    "sgdr_t0_10": "SGDR T_0 = 10, T_mult = 2",
}
SGDR_RUNS = ("sgdr_t0_1", "sgdr_t0_10")
C100 = ("dataset.name=cifar100", "dataset._target_=trainrepro.data.builders.cifar100")


def _run(folder: str, dataset: str, seed: int) -> Run:
    preset = "step" if folder.startswith("step") else folder
    lr = ("optimizer.lr=0.05",) if folder == "step_lr0.05" else ()
    data = C100 if dataset == "cifar100" else ()
    return Run(f"{folder}/{dataset}/seed{seed}", preset, seed, (*lr, *data))


QUICK_FOLDERS = ("step_lr0.1", "step_lr0.05", "sgdr_t0_1")
PROFILES = {
    # CIFAR-100 first: the preflight looks for each preset's dataset in its first run, so a
    # machine without CIFAR-100 is told in one line before any run starts (as bn4things).
    "full": Profile(
        "full",
        tuple(_run(f, d, s) for d in ("cifar100", "cifar10") for s in SEEDS for f in LABELS),
        note="GPU, 40 runs: WRN-28-10, 400 of our epochs (the code's 200 of 100,000 images), "
        "the step schedule at lr 0.1 and 0.05 and SGDR T_0 = 1 and 10 on CIFAR-10 and "
        "CIFAR-100 at 5 seeds; estimated ~16 GPU-hours (conf/experiment/sgdr/_base.yaml)",
    ),
    # Seed by seed, so that a profile stopped early leaves whole seeds to pair.
    "quick": Profile(
        "quick",
        tuple(_run(f, "cifar10", s) for s in SEEDS for f in QUICK_FOLDERS),
        config=("profile=sgdr_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16, 15.5 min wall (measured: conf/profile/sgdr_quick.yaml): "
        "WRN-10-1 on 10,000 CIFAR-10 "
        "images, 15 epochs, batch 32; the step schedule at lr 0.1 and 0.05 and SGDR T_0 = 1 "
        "(restarts 1, 3, 7, 15) at 5 seeds, and the 5 SGDR runs' snapshot ensembles",
    ),
}
PROFILES["medium"] = Profile(
    "medium",
    PROFILES["quick"].runs,
    config=("profile=sgdr_medium",),
    jobs=8,
    threads=2,
    note="one GPU, 8 runs at a time, ~7 min (an estimate from issue 20's H200 measurement, not "
    "measured: 15 runs × 7 epochs × 50,000 = 5,250,000 training images at 14.1k img/s, "
    "conf/profile/sgdr_medium.yaml): WRN-28-10 on all 50,000 CIFAR-10 images, bf16, 7 epochs "
    "(SGDR restarts 1, 3, 7); the quick profile's runs and seeds",
)

SETTING = (
    "the official code (github.com/loshchil/SGDR, SGDR_WRNs.py) trains WRN-28-10 (pre-"
    "activation, dropout 0) at batch 128, SGD momentum 0.9, an L2 term 5e-4 Σw² in the loss "
    "(torch's weight_decay 1e-3), for 200 epochs of a training set doubled by mirror images "
    "(100,000 images an epoch, plus random crops): the step schedule at lr 0.1 or 0.05 (×0.2 "
    "after 60, 120, 160) and SGDR from lr 0.05 to 0 per batch with T_0 = 1 or 10, T_mult = 2, "
    "5 runs each. The full profile is that setting with our epochs of 50,000 randomly flipped "
    "images: 400 epochs, every epoch number doubled (steps at 120, 240, 320; T_0 = 2 and 20), "
    "in bf16 + channels_last. The quick profile: WRN-10-1 (78k parameters) on a stratified "
    "10,000 CIFAR-10 images (all 10,000 test images), batch 32, 15 epochs (SGDR T_0 = 1: "
    "restarts 1, 3, 7, 15; steps at 4.5, 9, 12), bf16 on 2 CPU cores; no T_0 = 10 and no "
    "CIFAR-100. The medium profile: the full profile's WRN-28-10 on all 50,000 CIFAR-10 images "
    "for 7 epochs (restarts 1, 3, 7; steps at 2.1, 4.2, 5.6), with the quick profile's runs. "
    "The snapshot ensembles average the softmax of the last M restart snapshots of one run: "
    "M = 3 (T_0 = 10) in the full profile, M = 2 (T_0 = 1) in the others."
)

NUMBERS = (
    PaperNumber("sgdr_t0_10.wrn28_20.cifar10", 3.74, "3.74% (WRN-28-20, median of 2 runs)",
                "official README, scenario 10"),
    PaperNumber("sgdr_t0_10.wrn28_20.cifar100", 18.70, "18.70% (WRN-28-20, median of 2 runs)",
                "official README, scenario 20"),
    PaperNumber("ensemble.cifar10", 3.14, "3.14% (ensembles of WRN-28-10 SGDR snapshots)",
                "official README"),
    PaperNumber("ensemble.cifar100", 16.21, "16.21% (ensembles of WRN-28-10 SGDR snapshots)",
                "official README"),
)  # fmt: skip


# ---------------------------------------------------------------- snapshot ensembles
def _ensemble_rows(run_root: Path, run: str) -> list[dict[str, object]]:
    from trainrepro.analysis.ensemble import ensemble

    rep = ensemble(run_root / run, device="auto")  # every m = 1..all, on whatever is here
    digest = file_digest(run_root / run / "snapshots" / "index.json")
    return [{"run_dir": run, "index_sha256": digest, "kind": r["kind"], "m": r["m"],
             "members": " ".join(str(e) for e in r["members"]), "test_acc": r["test_acc"],
             "test_loss": r["test_loss"]} for r in rep["rows"]]  # fmt: skip


def attach_ensembles(res: Results) -> None:
    """Ensemble rows of the completed SGDR runs into ``res.extras["ensembles"]``: read from
    ensembles.csv, evaluated (and saved) for every run whose snapshots are not in it yet. Rows
    are tied to the SHA-256 of the run's snapshots/index.json: a redone run is evaluated anew."""
    saved = res.out / ENSEMBLE_FILE
    rows = pd.read_csv(saved) if saved.is_file() else pd.DataFrame()
    if res.run_root is not None:
        final = res.final()
        want = final[final["preset"].isin(SGDR_RUNS) & (final["status"] == "completed")]
        digests = {r: file_digest(res.run_root / r / "snapshots" / "index.json")
                   for r in want["run_dir"]
                   if (res.run_root / r / "snapshots" / "index.json").is_file()}  # fmt: skip
        if len(rows):
            same = rows["run_dir"].map(digests) == rows["index_sha256"]
            rows = rows[~rows["run_dir"].isin(list(digests)) | same]
        todo = [r for r in digests if r not in set(rows["run_dir"] if len(rows) else ())]
        if todo:
            print(f"snapshot ensembles of {len(todo)} run(s) ...", flush=True)
            new = pd.DataFrame([row for r in todo for row in _ensemble_rows(res.run_root, r)])
            rows = pd.concat([rows, new], ignore_index=True) if len(rows) else new
            res.out.mkdir(parents=True, exist_ok=True)
            rows.sort_values(["run_dir", "kind", "m"], kind="stable").to_csv(saved, index=False)
    if len(rows):
        parts = rows["run_dir"].str.split("/")
        rows = rows.assign(preset=parts.str[0], dataset=parts.str[1])
        res.extras["ensembles"] = rows
        res.notes.append(f"Snapshot ensembles: `{ENSEMBLE_FILE}` (trainrepro ensemble on each "
                         "completed SGDR run: every snapshot alone and the mean-softmax "
                         "ensembles of its last m).")  # fmt: skip


def prepare(res: Results) -> None:
    """Dataset and seed from the run path; the snapshot ensembles (run dirs or ensembles.csv)."""
    parts = res.df["run_dir"].str.split("/")
    res.df["dataset"] = parts.str[1]
    res.df["seed"] = parts.str[2].str.removeprefix("seed").astype(int)
    attach_ensembles(res)


# ---------------------------------------------------------------- table
def _mean_sd(xs: pd.Series) -> str:
    xs = xs.astype(float)
    if xs.empty:
        return "—"
    return fmt(xs.mean()) if len(xs) == 1 else f"{fmt(xs.mean())} ± {fmt(xs.std())}"


def table(res: Results) -> str:
    final = res.final()
    done = final[final["status"] == "completed"]
    lines = [
        f"# Loshchilov & Hutter 2017 (SGDR) ({res.name})",
        "",
        "| schedule | dataset | runs | final test error (%) | best test error (%) over "
        "epochs | first epoch at the step schedule's final accuracy (mean) | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in sorted(set(final["dataset"]), key=lambda d: d != "cifar10"):
        reach = {p: anytime_effects(res, p, dataset) for p in SGDR_RUNS}
        for preset in LABELS:
            sub = done[(done["preset"] == preset) & (done["dataset"] == dataset)]
            runs = final[(final["preset"] == preset) & (final["dataset"] == dataset)]
            if runs.empty:
                continue
            best = res.df[res.df["run_dir"].isin(sub["run_dir"])].groupby("run_dir")["test_acc"]
            if preset in STEPS:  # each step run: the first epoch at its own final accuracy
                curves = res.df[res.df["run_dir"].isin(sub["run_dir"])]
                epochs = [first_epoch(c, float(c["test_acc"].iloc[-1]))
                          for _, c in curves.sort_values("epoch").groupby("run_dir")]  # fmt: skip
            else:
                epochs = [v["sgdr"] for v in reach[preset].values()]
            paper = "—"
            if preset == "sgdr_t0_10":
                n = next(n for n in NUMBERS if n.key.endswith(dataset))
                paper = f"{n.shown} ({n.source})"
            lines.append(
                f"| {LABELS[preset]} | {dataset} | {len(sub)}/{len(runs)} | "
                f"{_mean_sd(100 - sub['test_acc'])} | {_mean_sd(100 - best.max())} | "
                f"{fmt(sum(epochs) / len(epochs), 1) if epochs else '—'} | {paper} |"
            )
    lines += ["", "Means ± sd over seeds (completed runs). First epoch: a step run's at its own "
              "final accuracy; an SGDR run's at its seed's step target (the better step run's "
              "final accuracy; never reached: one epoch after its last, the claims' rule). "
              "Epochs are ours (the official code's are twice as long: 100,000 images).",
              ""]  # fmt: skip
    lines += _ensemble_table(res)
    return "\n".join(lines) + "\n"


def time_to_target(res: Results) -> list[str]:
    """Per dataset, every schedule against the better step schedule's mean final accuracy, in
    epochs (the anytime claims' axis)."""
    done, rows, levels = ended(res), [], []
    for dataset in sorted(set(done["dataset"]), key=lambda d: d != "cifar10"):
        here = done[done["dataset"] == dataset]
        steps = {p: here.loc[(here["preset"] == p) & (here["status"] == "completed"), "run_dir"]
                 for p in STEPS}  # fmt: skip
        finals = {p: mean_final(res, r) for p, r in steps.items() if len(r)}
        if not finals:
            continue
        step = max(finals, key=finals.get)
        levels.append(f"{dataset} {finals[step]:.2f}% ({LABELS[step]})")
        rows += [Row(f"{LABELS[p]}, {dataset}", list(here.loc[here["preset"] == p, "run_dir"]),
                     finals[step], dataset) for p in LABELS]  # fmt: skip
    if not rows:
        return ["No completed step-schedule run: no target to time the schedules against."]
    why = (
        "per dataset, the better step schedule's final test accuracy, mean over its completed "
        f"runs ({'; '.join(levels)}): the anytime claims' level (they take it per seed, from "
        "the better step run of that seed). Epochs are ours (the official code's are twice as "
        "long)."
    )
    return lines(res, rows, axis="epochs", why=why)


def _ensemble_table(res: Results) -> list[str]:
    rows = res.extras.get("ensembles")
    if rows is None or len(rows) == 0:
        return ["Snapshot ensembles: none evaluated (they need the SGDR runs' snapshots)."]
    preset, m = ENSEMBLE.get(res.profile, ENSEMBLE["quick"])
    lines = [f"Snapshot ensembles (mean softmax of the last m restart snapshots; the claim uses "
             f"{LABELS[preset]}, m = {m}): test error (%), mean over runs", "",
             "| schedule | dataset | m | members (epochs) | ensemble | best member alone | "
             "paper |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (p, dataset), sub in rows.groupby(["preset", "dataset"], sort=True):
        singles = sub[sub["kind"] == "snapshot"]
        for k, ens in sub[sub["kind"] == "ensemble"].groupby("m", sort=True):
            best = []
            for run, e in ens.groupby("run_dir"):
                members = str(e["members"].iloc[0]).split()
                alone = singles[(singles["run_dir"] == run)
                                & singles["members"].astype(str).isin(members)]  # fmt: skip
                best.append(float(alone["test_acc"].max()))
            paper = next((n for n in NUMBERS if n.key == f"ensemble.{dataset}"), None)
            lines.append(
                f"| {LABELS.get(p, p)} | {dataset} | {k} | {ens['members'].iloc[0]} | "
                f"{fmt(100 - ens['test_acc'].astype(float).mean())} | "
                f"{fmt(100 - sum(best) / len(best))} | "
                f"{paper.shown if paper and k == m and p == preset else '—'} |"
            )
    lines += ["", "The paper's ensembles combine snapshots of several runs (the README does "
              "not say how many); ours are of one run each."]  # fmt: skip
    return lines


# ---------------------------------------------------------------- figure
def plot_anytime(res: Results, prefix: Path) -> object:
    """Test error against epochs per schedule: mean over seeds, band min–max."""
    df = res.df
    datasets = sorted(set(df["dataset"]), key=lambda d: d != "cifar10")
    if df.empty:
        return None
    fig = MplFigure(figsize=(5.2 * len(datasets), 3.8), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        sub = df[df["dataset"] == dataset]
        for i, preset in enumerate(p for p in LABELS if p in set(sub["preset"])):
            runs = sub[sub["preset"] == preset]
            err = (100 - runs["test_acc"].astype(float)).groupby(runs["epoch"])
            curve = err.agg(["mean", "min", "max"])
            n = runs["run_dir"].nunique()
            ax.plot(curve.index, curve["mean"], color=f"C{i}", label=f"{LABELS[preset]} (n={n})")
            ax.fill_between(curve.index, curve["min"], curve["max"], color=f"C{i}", alpha=0.2)
        low = (100 - sub["test_acc"].astype(float)).min()
        if math.isfinite(low):
            ax.set_ylim(max(0.0, low - 2.0), min(100.0, 2.5 * low + 10.0))  # the end, as Fig. 3
        ax.set(title=dataset, xlabel="epoch", ylabel="test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Anytime performance (Loshchilov & Hutter 2017, Fig. 3); band: min–max over "
                 "seeds")  # fmt: skip
    return save(fig, prefix, tight=True)


FIGURES = (
    Figure("anytime", "Test error against epochs for the step schedule and SGDR (mean over "
           "seeds, band min–max), one panel per dataset", plot_anytime),
)  # fmt: skip

PAPER = Paper(
    name="sgdr",
    title="Loshchilov & Hutter 2017 (SGDR)",
    citation='Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", '
    "ICLR 2017 (arXiv:1608.03983); WRN-28-10 on CIFAR-10/100 (Table 1, Figure 3), snapshot "
    "ensembles (Huang et al. 2017)",
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=FIGURES,
    table=table,
    layout="{preset}/{dataset}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
    time_to_target=time_to_target,
)

"""What Loshchilov & Hutter (SGDR, ICLR 2017) claim on CIFAR and how our runs decide it, each
claim an effect paired by seed:

- anytime performance: per seed, the step schedule's final test accuracy is the target (the
  better of the step runs at lr 0.1 and 0.05 where both ran); the effect is the epoch at which
  that step run first reaches it minus the epoch at which SGDR first does. SGDR never reaching
  it counts as one epoch after the run's last: a lower bound of its true epoch, so the effect
  is, if anything, in SGDR's favour, and still negative.
- snapshot ensembles: per seed, the test accuracy of the mean-softmax ensemble of the last M
  snapshots of one SGDR run minus that of its best single member (``trainrepro ensemble``'s
  rows, computed by the report's prepare step: sgdr.py).
"""

from __future__ import annotations

import math
import re
from statistics import mean

import pandas as pd

from trainrepro.reproduce.paper import NOT_RUN, Claim, Effect, Measurement, Results, Verdict

STEPS = ("step_lr0.1", "step_lr0.05")
# Snapshots in each profile's ensemble (the last M restarts) and the SGDR run they come from.
# Full: the paper's ensembles are of T_0 = 10 snapshots (its epochs 30, 70, 150: ours 60, 140,
# 300). Quick and medium: their T_0 = 1 run's last two (7 and 15; 3 and 7): the earlier
# snapshots of so short a run are far weaker than the last.
ENSEMBLE = {"full": ("sgdr_t0_10", 3), "medium": ("sgdr_t0_1", 2), "quick": ("sgdr_t0_1", 2)}
_EPOCHS = "epochs"
_POINTS = "points"


def seed_of(run_dir: str) -> int:
    return int(re.search(r"seed(\d+)$", run_dir).group(1))


def finished(res: Results, dataset: str) -> pd.DataFrame:
    """Per-epoch rows of the completed runs on ``dataset``."""
    final = res.final()
    done = set(final.loc[final["status"] == "completed", "run_dir"])
    df = res.df[res.df["run_dir"].isin(done) & (res.df["dataset"] == dataset)]
    return df.sort_values(["run_dir", "epoch"], kind="stable")


def first_epoch(curve: pd.DataFrame, target: float) -> float:
    """The first epoch whose test accuracy reaches ``target``; NaN if none does."""
    hit = curve.loc[curve["test_acc"].astype(float) >= target - 1e-9, "epoch"]
    return float(hit.min()) if len(hit) else math.nan


def anytime_effects(res: Results, preset: str, dataset: str) -> dict[int, dict[str, float]]:
    """Per seed with a completed step run and a completed ``preset`` run: the target, the
    epoch each first reaches it, and whether SGDR's was censored."""
    df = finished(res, dataset)
    out: dict[int, dict[str, float]] = {}
    for run_dir, curve in df[df["preset"] == preset].groupby("run_dir", sort=True):
        seed = seed_of(run_dir)
        steps = df[df["preset"].isin(STEPS) & (df["seed"] == seed)]
        if steps.empty:
            continue
        finals = steps.groupby("run_dir", sort=True).tail(1)
        best = finals.loc[finals["test_acc"].astype(float).idxmax()]
        target = float(best["test_acc"])
        step_epoch = first_epoch(steps[steps["run_dir"] == best["run_dir"]], target)
        sgdr_epoch = first_epoch(curve, target)
        censored = math.isnan(sgdr_epoch)
        if censored:
            sgdr_epoch = float(curve["epoch"].max()) + 1
        out[seed] = {"target": target, "step": step_epoch, "sgdr": sgdr_epoch,
                     "censored": float(censored), "step_preset": best["preset"],
                     "last": float(best["epoch"])}  # fmt: skip
    return out


def anytime(preset: str, dataset: str):
    def measure(res: Results) -> Measurement | Verdict:
        per_seed = anytime_effects(res, preset, dataset)
        if not per_seed:
            return Verdict(NOT_RUN, f"no seed has both a completed step run and a completed "
                           f"{preset} run on {dataset}")  # fmt: skip
        diffs = {s: v["step"] - v["sgdr"] for s, v in per_seed.items()}
        censored = [s for s, v in per_seed.items() if v["censored"]]
        detail = "per seed (target: the step run's final test accuracy): " + "; ".join(
            f"seed {s}: target {v['target']:.2f}% ({v['step_preset']}), step reaches it at "
            f"epoch {v['step']:g}, SGDR at {'> ' if v['censored'] else ''}"
            f"{v['sgdr'] - v['censored']:g}"
            for s, v in per_seed.items()
        )
        if censored:
            detail += (f"; SGDR never reached it at seed(s) {', '.join(map(str, censored))}: "
                       "counted at one epoch after its last")  # fmt: skip
        numbers = {"step": mean(v["step"] for v in per_seed.values()),
                   "sgdr": mean(v["sgdr"] for v in per_seed.values())}  # fmt: skip
        return Measurement(tuple(diffs.values()), detail, numbers)

    return measure


def ensemble_effects(res: Results, dataset: str) -> tuple[str, int, dict[int, dict[str, object]]]:
    """Per seed: the profile's ensemble of the last M snapshots against its best member."""
    preset, m = ENSEMBLE.get(res.profile, ENSEMBLE["quick"])
    rows = res.extras.get("ensembles")
    out: dict[int, dict[str, object]] = {}
    if rows is None or len(rows) == 0:
        return preset, m, out
    rows = rows[(rows["preset"] == preset) & (rows["dataset"] == dataset)]
    for run_dir, sub in rows.groupby("run_dir", sort=True):
        ens = sub[(sub["kind"] == "ensemble") & (sub["m"] == m)]
        if ens.empty:
            continue
        members = [int(e) for e in str(ens["members"].iloc[0]).split()]
        singles = sub[(sub["kind"] == "snapshot") & sub["members"].astype(str).isin(
            [str(e) for e in members])]  # fmt: skip
        if len(singles) != m:
            continue
        best = singles.loc[singles["test_acc"].astype(float).idxmax()]
        out[seed_of(run_dir)] = {"ensemble": float(ens["test_acc"].iloc[0]),
                                 "best": float(best["test_acc"]), "best_epoch": best["members"],
                                 "members": members}  # fmt: skip
    return preset, m, out


def snapshot_ensemble(dataset: str):
    def measure(res: Results) -> Measurement | Verdict:
        preset, m, per_seed = ensemble_effects(res, dataset)
        if not per_seed:
            return Verdict(NOT_RUN, f"no evaluated ensemble of the last {m} snapshots of a "
                           f"completed {preset} run on {dataset} (the report evaluates the "
                           "run directories' snapshots; runs.csv holds none)")  # fmt: skip
        diffs = {s: float(v["ensemble"]) - float(v["best"]) for s, v in per_seed.items()}
        detail = f"{preset}, ensemble of the last {m} snapshots, per seed: " + "; ".join(
            f"seed {s}: ensemble of epochs {' '.join(map(str, v['members']))} "
            f"{v['ensemble']:.2f}%, best single (epoch {v['best_epoch']}) {v['best']:.2f}%"
            for s, v in per_seed.items()
        )
        numbers = {"ensemble": mean(float(v["ensemble"]) for v in per_seed.values()),
                   "best_single": mean(float(v["best"]) for v in per_seed.values())}  # fmt: skip
        return Measurement(tuple(diffs.values()), detail, numbers)

    return measure


_C100 = ("full",)
_NO_C100 = ("CIFAR-100 is on none of the project's machines: the quick and medium profiles are "
            "CIFAR-10 only")  # fmt: skip
_NO_T0_10 = ("at the quick and medium scales a T_0 = 10 run has at most one restart; their "
             "T_0 = 1 run over 15 (7) epochs has the shape of T_0 = 10 over 150")  # fmt: skip


def _anytime_effect(t0: str, dataset: str) -> Effect:
    return Effect(
        f"epoch at which the step schedule first reaches its final test accuracy − epoch at "
        f"which SGDR ({t0}, T_mult = 2) first does, {dataset}, paired by seed",
        0.0,
        ">",
        _EPOCHS,
    )


def _ensemble_effect(dataset: str) -> Effect:
    return Effect(
        f"test accuracy of the snapshot ensemble (mean softmax of the last M snapshots of one "
        f"SGDR run) − its best single snapshot, {dataset}, paired by seed",
        0.0,
        ">",
        _POINTS,
    )


_ANYTIME = ("SGDR reaches the step schedule's final test error in fewer epochs (anytime "
            "performance)")  # fmt: skip
_ENSEMBLE = "An ensemble of the snapshots taken at SGDR's restarts beats its best single snapshot"
_ENSEMBLE_SOURCE = "the official README (3.14% / 16.21%); Huang et al. 2017"
CLAIMS = (
    Claim("anytime_t0_1", _ANYTIME + ", T_0 = 1", "Table 1, Figure 3",
          _anytime_effect("T_0 = 1", "CIFAR-10"), anytime("sgdr_t0_1", "cifar10")),
    Claim("anytime_t0_10", _ANYTIME + ", T_0 = 10", "Table 1, Figure 3",
          _anytime_effect("T_0 = 10", "CIFAR-10"), anytime("sgdr_t0_10", "cifar10"),
          profiles=("full",), scale_note=_NO_T0_10),
    Claim("snapshot_ensemble", _ENSEMBLE, _ENSEMBLE_SOURCE,
          _ensemble_effect("CIFAR-10"), snapshot_ensemble("cifar10")),
    Claim("anytime_t0_10_cifar100", _ANYTIME + ", T_0 = 10, CIFAR-100",
          "Table 1, Figure 3", _anytime_effect("T_0 = 10", "CIFAR-100"),
          anytime("sgdr_t0_10", "cifar100"), profiles=_C100, scale_note=_NO_C100),
    Claim("snapshot_ensemble_cifar100", _ENSEMBLE + ", CIFAR-100", _ENSEMBLE_SOURCE,
          _ensemble_effect("CIFAR-100"), snapshot_ensemble("cifar100"), profiles=_C100,
          scale_note=_NO_C100),
)  # fmt: skip

"""Brock, De & Smith 2021a (NF-ResNets, Scaled WS, signal propagation) and Brock, De, Smith &
Simonyan 2021b (Adaptive Gradient Clipping), at CIFAR-10 scale: BN-ResNet, the unnormalized
ResNet and NF-ResNet, with and without AGC, at a small and a large batch over an lr grid, and
AGC's threshold swept at the small batch.

Runs: conf/experiment/nfnet/<preset>.yaml, in runs/nfnet[-quick]/<cell>/b<B>/lr<lr>/seed<k>,
where <cell> is the preset, or ``nf_resnet_agc_clip<λ>`` for the threshold sweep. The compared
cells run at seeds 0-2; the context cells (BN-ResNet and the unnormalized net at the large
batch, the unnormalized net at the small one) at seed 0. The signal-propagation measurement
needs no runs: ``prepare`` computes it at init for each seed of ``SPP_SEEDS`` (seconds each)
and keeps it in ``spp.csv`` beside runs.csv. Claims: every effect is one number per seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

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
from trainrepro.reproduce.papers.nfnet_report import (
    CHANCE,
    CLIP_SWEEP,
    CLIP_TAG,
    LABELS,
    figures,
    summarize,
    table,
)

SPP_FILE = "spp.csv"
SPP_DEPTH = 56  # ResNet-56 at init: 27 residual blocks, 9 per stage
SPP_SEEDS = (0, 1, 2)  # init seeds (weights and the N(0,1) batch): one SPP value per seed
# Thresholds, declared from the papers' statements before these seeds were run:
MATCH_POINTS = 3.0  # "within a few points" (the acceptance; the papers: "match")
AGC_MARGIN = 2.0  # points: AGC "less pronounced" at small batches (no number in the paper)
SLOPE_MARGIN = 0.5  # points per doubling of λ: 2 points over the sweep's 16x (insensitive)
GROWS, BOUNDED = 100.0, 10.0  # the SPP checks' factors (see the claims)
SEEDS = (0, 1, 2)  # compared cells


def _run(preset: str, batch: int, lr: float, seed: int = 0, clip: float | None = None) -> Run:
    cell = preset if clip is None else f"{preset}{CLIP_TAG}{clip:g}"
    overrides = [f"batch_size={batch}", f"optimizer.lr={lr:g}"]
    if clip is not None:
        overrides.append(f"callbacks.agc.clipping={clip:g}")
    return Run(f"{cell}/b{batch}/lr{lr:g}/seed{seed}", preset, seed, tuple(overrides))


def _cells(batch: int, lr: float, presets: tuple[str, ...], compared: tuple[str, ...]):
    return tuple(_run(p, batch, lr, s) for p in presets
                 for s in (SEEDS if p in compared else (0,)))  # fmt: skip


def _sweep(batch: int) -> tuple[Run, ...]:
    return tuple(_run("nf_resnet_agc", batch, 0.1, s, c) for c in CLIP_SWEEP for s in SEEDS)


FULL_GRID = {128: (0.05, 0.1, 0.2, 0.4, 0.8, 1.6), 4096: (0.8, 1.6, 3.2, 6.4, 12.8)}
QUICK_SMALL, QUICK_LARGE = 128, 512  # conf/profile/nfnet_quick.yaml explains 512
QUICK_GRID = (0.4, 1.6, 6.4)  # 1x, 4x, 16x the linearly scaled 0.1 * 512 / 128
QUICK_PRESETS = ("bn_resnet", "plain_resnet", "nf_resnet", "nf_resnet_agc")
MEDIUM_LARGE = 4096  # medium: the full profile's batches, 128 and 4096, on all 50,000 images
MEDIUM_GRID = (0.8, 3.2, 12.8)  # 1/4x, 1x, 4x the linearly scaled 0.1 * 4096 / 128; in FULL_GRID
NF = ("nf_resnet", "nf_resnet_agc")  # compared at every batch and lr
SMALL_COMPARED = ("bn_resnet", *NF)  # compared at the small batch, lr 0.1


def _full_runs() -> tuple[Run, ...]:
    runs = []
    for batch, grid in FULL_GRID.items():
        for lr in grid:
            if batch == min(FULL_GRID):  # the claims compare lr 0.1 only at the small batch
                compared = SMALL_COMPARED if lr == 0.1 else ()
            else:
                compared = NF
            runs += _cells(batch, lr, tuple(LABELS), compared)
    return tuple(runs) + _sweep(min(FULL_GRID))


PROFILES = {
    "full": Profile(
        "full",
        _full_runs(),
        note="GPU, 109 runs: 7 presets x (6 lrs at batch 128 + 5 at batch 4096) at seed 0; "
        "NF-ResNet +- AGC at every point and BN-ResNet at batch 128, lr 0.1 also at seeds 1-2; "
        "AGC's λ 0.04 and 0.16 at batch 128, lr 0.1, seeds 0-2",
    ),
    "quick": Profile(
        "quick",
        tuple(r for lr in QUICK_GRID for r in _cells(QUICK_LARGE, lr, QUICK_PRESETS, NF))
        + _cells(QUICK_SMALL, 0.1, QUICK_PRESETS, SMALL_COMPARED)
        + _sweep(QUICK_SMALL),
        config=("profile=nfnet_quick",),
        jobs=2,
        threads=1,
        note="2 CPU cores, bf16: depth 8, 5,000 images, 6 epochs; BN-, unnormalized and "
        "NF-ResNet (+AGC) at batch 128 (lr 0.1) and 512 (lr 0.4, 1.6, 6.4), the compared cells "
        "at seeds 0-2 (40 runs: 13 min wall measured 2026-12-04 beside a test run on the same "
        "cores); AGC's λ 0.01, 0.04, 0.16 at batch 128",
    ),
    "medium": Profile(
        "medium",
        _cells(QUICK_SMALL, 0.1, QUICK_PRESETS, SMALL_COMPARED)  # launch bound: longest first
        + _sweep(QUICK_SMALL)
        + tuple(r for lr in MEDIUM_GRID for r in _cells(MEDIUM_LARGE, lr, QUICK_PRESETS, NF)),
        config=("profile=nfnet_medium",),
        jobs=8,
        threads=2,
        note="one GPU, fp32, estimated ~7 min with 8 runs at a time (from issue 20's H200 "
        "measurement, not a measured time): ResNet-20 on all 50,000 images, 4 epochs (1 of "
        "warmup); BN-, unnormalized and NF-ResNet (+AGC) at batch 128 (lr 0.1) and 4096 (lr 0.8, "
        "3.2, 12.8), the compared cells at seeds 0-2 (40 runs); AGC's λ 0.01, 0.04, 0.16 at "
        "batch 128",
    ),
}

# The papers print no CIFAR numbers (both train on ImageNet); what they state, with sources.
NUMBERS = (
    PaperNumber("alpha", 0.2, "0.2", "2021a Sec. 4; nfnets/nf_resnet.py"),
    PaperNumber("agc.clipping", 0.01, "0.01", "2021b Sec. 4.1; experiment_nfnets.py (B 4096)"),
    PaperNumber("agc.eps", 1e-3, "1e-3", "2021b Sec. 4.1; nfnets/agc_optax.py"),
    PaperNumber("gamma.relu", math.sqrt(2 / (1 - 1 / math.pi)), "sqrt(2/(1-1/pi))",
                "2021a Sec. 4.2; nfnets/base.py: 1.7139588594436646 (Monte Carlo)"),
)  # fmt: skip

SETTING = (
    "2021a trains NF-ResNets (ResNet-50 and deeper) on ImageNet at batch 1024-4096, where "
    "NF-ResNet-50 is reported about level with BN-ResNet-50 (recalled, not verified here); "
    "2021b trains NFNets and NF-ResNet-50 on ImageNet for 360 epochs at batch 4096 with SGD "
    "Nesterov 0.9, lr 0.1 x B/256, a 5-epoch warmup then cosine, wd 2e-5, label smoothing and "
    "EMA, AGC λ 0.01 (experiment_nfnets.py), and a larger λ at smaller batches (Fig. 2; the "
    "sweep's values are not transcribed here). Neither paper has CIFAR numbers. Full profile: "
    "CIFAR ResNet-20 (272k parameters) on all 50,000 CIFAR-10 images, 60 epochs (2 of warmup, "
    "cosine), batch 128 and 4096, wd 5e-4. Quick profile: ResNet-8 (78k parameters) on a "
    "stratified 5,000 images, 6 epochs (1 of warmup), batch 128 and 512 (512 of 5,000 images is "
    "~10 updates an epoch, as 4096 of 50,000), bf16 on 2 CPU cores; AGC's λ 0.01 at batch 128 "
    "is the paper's batch-4096 value, hence the λ sweep. Compared cells at seeds 0-2; signal "
    f"propagation on ResNet-{SPP_DEPTH} at init over init seeds {SPP_SEEDS[0]}-{SPP_SEEDS[-1]}"
)


def prepare(res: Results) -> None:
    """Grid batch and lr from the run path; the SPP rows (computed once, kept in spp.csv)."""
    parts = res.df["run_dir"].str.split("/")
    res.df["grid_batch"] = parts.str[1].str.removeprefix("b").astype(int)
    res.df["grid_lr"] = parts.str[2].str.removeprefix("lr").astype(float)
    saved = res.out / SPP_FILE
    if saved.is_file():
        spp = pd.read_csv(saved)
        if "seed" in spp and set(spp["seed"]) == set(SPP_SEEDS):
            res.extras["spp"] = spp
            res.notes.append(f"Signal propagation: read from `{SPP_FILE}` (delete it to "
                             "recompute).")  # fmt: skip
            return
    from trainrepro.instruments.signal_prop import measure

    spp = pd.concat(
        [measure(SPP_DEPTH, batch=32, seed=s).assign(seed=s) for s in SPP_SEEDS],
        ignore_index=True,
    )
    res.out.mkdir(parents=True, exist_ok=True)
    spp.to_csv(saved, index=False)
    res.extras["spp"] = spp


# ---------------------------------------------------------------- claims
def _spp_per_seed(res: Results) -> dict[int, dict[str, tuple[float, float, float]]] | str:
    """Per init seed and variant: (first, last, max) average squared channel mean."""
    spp = res.extras.get("spp")
    if spp is None or spp.empty:
        return "no signal-propagation rows"
    out: dict[int, dict[str, tuple[float, float, float]]] = {}
    for (seed, variant), sub in spp.groupby(["seed", "variant"], sort=True):
        sq = sub.sort_values("block")["avg_sq_mean"].astype(float)
        out.setdefault(int(seed), {})[variant] = (sq.iloc[0], sq.iloc[-1], sq.max())
    return out


PLAIN, BN_V, NF_V = "ResNet, no normalization", "BN-ResNet", "NF-ResNet"


def measure_spp_growth(res: Results) -> Measurement | Verdict:
    got = _spp_per_seed(res)
    if isinstance(got, str):
        return Verdict(NOT_RUN, got)
    seeds = [s for s, v in got.items() if PLAIN in v]
    if not seeds:
        return Verdict(NOT_RUN, "no unnormalized variant in spp.csv")
    values = tuple(math.log10(got[s][PLAIN][1] / got[s][PLAIN][0]) for s in seeds)
    detail = (
        f"ResNet-{SPP_DEPTH} at init, N(0,1) batch of 32, init seeds {seeds}: the unnormalized "
        "net's average squared channel mean, first -> last residual block: "
        + "; ".join(f"{got[s][PLAIN][0]:.3g} -> {got[s][PLAIN][1]:.3g}" for s in seeds)
    )
    return Measurement(values, detail, {"log10_growth_mean": float(np.mean(values))})


def measure_spp_bounded(res: Results) -> Measurement | Verdict:
    got = _spp_per_seed(res)
    if isinstance(got, str):
        return Verdict(NOT_RUN, got)
    seeds = [s for s, v in got.items() if BN_V in v and NF_V in v]
    if not seeds:
        return Verdict(NOT_RUN, "no BN-ResNet and NF-ResNet rows in spp.csv")
    values = tuple(math.log10(max(got[s][BN_V][2], got[s][NF_V][2])) for s in seeds)
    detail = (
        f"ResNet-{SPP_DEPTH} at init, init seeds {seeds}: largest average squared channel mean "
        "over the residual blocks, BN / NF: "
        + "; ".join(f"{got[s][BN_V][2]:.3g} / {got[s][NF_V][2]:.3g}" for s in seeds)
    )
    return Measurement(values, detail, {"log10_max_mean": float(np.mean(values))})


def _small(s: pd.DataFrame) -> pd.DataFrame:
    return s[(s["batch"] == s["batch"].min()) & (s["lr"] == 0.1)] if len(s) else s


def _acc(row: Mapping[str, object]) -> float:
    """Final test accuracy; a diverged run counts as chance (10%), said in the detail."""
    return float(row["test_acc"]) if row["status"] == "completed" else CHANCE


def _paired(s: pd.DataFrame, a: str, b: str) -> tuple[list[int], dict[str, dict[int, float]]]:
    """Seeds both cells ran, and each cell's accuracy per seed."""
    by = {c: {int(r.seed): _acc(r._asdict()) for r in s[s["cell"] == c].itertuples()}
          for c in (a, b)}  # fmt: skip
    return sorted(set(by[a]) & set(by[b])), by


def _diff(res: Results, a: str, b: str, what: str) -> Measurement | Verdict:
    """Per seed, accuracy of cell ``a`` minus cell ``b`` at the small batch, lr 0.1."""
    s = _small(summarize(res.final()))
    seeds, by = _paired(s, a, b)
    if not seeds:
        return Verdict(NOT_RUN, f"no seed with {LABELS[a]} and {LABELS[b]} at the small batch, "
                       "lr 0.1: every profile declares them at seeds 0-2")  # fmt: skip
    batch = int(s["batch"].iloc[0])
    values = tuple(by[a][k] - by[b][k] for k in seeds)
    mean = {c: float(np.mean([by[c][k] for k in seeds])) for c in (a, b)}
    bad = s[(s["status"] != "completed") & s["cell"].isin([a, b])]
    detail = (
        f"batch {batch}, lr 0.1, seeds {seeds} ({what}): final test accuracy {LABELS[a]} "
        f"{mean[a]:.2f}%, {LABELS[b]} {mean[b]:.2f}% (means)"
        + (f"; diverged (counted as {CHANCE:g}%): {len(bad)} run(s)" if len(bad) else "")
    )
    return Measurement(values, detail, {a: mean[a], b: mean[b]})


def measure_nf_matches_bn(res: Results) -> Measurement | Verdict:
    return _diff(res, "nf_resnet", "bn_resnet", "paired by seed")


def measure_agc_small_batch(res: Results) -> Measurement | Verdict:
    got = _diff(res, "nf_resnet_agc", "nf_resnet", "AGC λ 0.01, the paper's batch-4096 value")
    if isinstance(got, Verdict):
        return got
    s = _small(summarize(res.final()))
    clipped = s[s["cell"] == "nf_resnet_agc"]["agc"].dropna()
    if len(clipped):
        got = Measurement(got.values, got.detail + f"; AGC clipped {100 * clipped.mean():.0f}% "
                          "of units in the last epoch (mean)", got.numbers)  # fmt: skip
    return got


def measure_agc_threshold(res: Results) -> Measurement | Verdict:
    s = _small(summarize(res.final()))
    sweep = s[s["cell"].str.startswith("nf_resnet_agc")]
    clips = sorted({0.01, *CLIP_SWEEP})
    values, seeds = [], []
    for seed, g in sweep.groupby("seed"):
        acc = {float(r.clip): _acc(r._asdict()) for r in g.itertuples()}
        if all(any(math.isclose(c, k) for k in acc) for c in clips):
            x = np.log2(np.array(clips) / clips[0])
            y = np.array([next(v for k, v in acc.items() if math.isclose(c, k)) for c in clips])
            values.append(float(np.polyfit(x, y, 1)[0]))
            seeds.append(int(seed))
    have = ", ".join(f"{c:g}" for c in sorted(set(sweep["clip"].round(6)))) or "none"
    if not values:
        return Verdict(NOT_RUN, f"the λ sweep ({', '.join(f'{c:g}' for c in clips)} at the small "
                       "batch, lr 0.1, seeds 0-2) is declared in every profile and "
                       f"not run yet: these runs hold λ {have}")  # fmt: skip
    means = sweep[sweep["seed"].isin(seeds)].groupby("clip")
    detail = (
        f"least-squares slope of final test accuracy on log2(λ / 0.01), seeds {seeds}; mean "
        "accuracy (units clipped) per λ: " + ", ".join(
            f"{c:g}: {g['test_acc'].mean():.2f}% ({100 * g['agc'].mean():.0f}%)" for c, g in means)
    )  # fmt: skip
    return Measurement(tuple(values), detail, {"slope_mean": float(np.mean(values))})


def measure_agc_stability(res: Results) -> Measurement | Verdict:
    s = summarize(res.final())
    large = s[s["batch"] == s["batch"].max()] if len(s) else s
    values, seeds, parts = [], [], []
    for seed, g in large.groupby("seed"):
        nf, agc = (g[g["cell"] == c] for c in NF)
        lrs = sorted(set(nf["lr"]) & set(agc["lr"]))
        if len(lrs) < 2:
            continue
        n_nf = int(nf[nf["lr"].isin(lrs)]["stable"].sum())
        n_agc = int(agc[agc["lr"].isin(lrs)]["stable"].sum())
        values.append(float(n_agc - n_nf))
        seeds.append(int(seed))
        parts.append(f"seed {seed}: NF {n_nf}/{len(lrs)}, NF + AGC {n_agc}/{len(lrs)}")
    if not values:
        return Verdict(NOT_RUN, "no seed with NF-ResNet and NF-ResNet + AGC at two or more lrs "
                       "of the large batch")  # fmt: skip
    batch = int(large["batch"].iloc[0])
    detail = f"batch {batch}, lrs {sorted(set(large['lr']))}: stable lrs " + "; ".join(parts)
    if not any(values) and all(large[large["cell"].isin(NF)]["stable"]):
        detail += (". Every lr of the grid is stable with and without AGC: the grid does not "
                   "reach NF-ResNet's instability here")  # fmt: skip
    return Measurement(tuple(values), detail, {"stable_lr_gain_mean": float(np.mean(values))})


UNIT = "points"
CLAIMS = (
    Claim(
        "signal_propagation",
        "At initialization the unnormalized ResNet's mean shift grows with depth",
        "2021a Sec. 3-4, Fig. 1",
        Effect(f"per init seed, log10 of ResNet-{SPP_DEPTH}'s average squared channel mean, "
               "last over first residual block, without normalization (2 = 100x)",
               math.log10(GROWS), ">", "decades"),  # fmt: skip
        measure_spp_growth,
    ),
    Claim(
        "signal_propagation_bounded",
        "At initialization BN-ResNet's and NF-ResNet's mean shift stays bounded",
        "2021a Sec. 3-4, Fig. 1",
        Effect(f"per init seed, log10 of the largest average squared channel mean over "
               f"ResNet-{SPP_DEPTH}'s residual blocks, the larger of BN-ResNet's and NF-ResNet's "
               "(1 = ten times the unit-variance input)", math.log10(BOUNDED), "<",
               "decades"),  # fmt: skip
        measure_spp_bounded,
    ),
    Claim(
        "nf_matches_bn",
        "NF-ResNets train to the accuracy of batch-normalized ResNets",
        "2021a Sec. 5, Table 1 (ImageNet)",
        Effect("per seed, NF-ResNet's minus BN-ResNet's final test accuracy at the small batch, "
               f"lr 0.1 (at most {MATCH_POINTS:g} points below: non-inferiority)", -MATCH_POINTS,
               ">", UNIT),  # fmt: skip
        measure_nf_matches_bn,
    ),
    Claim(
        "agc_small_batch",
        "At a small batch AGC makes little difference to NF-ResNet's accuracy",
        "2021b Sec. 4.1, Fig. 2 (recalled: AGC's benefit is at large batches; λ 0.01 is its "
        "value for batch 1024-4096, smaller batches take a larger λ)",
        Effect("per seed, NF-ResNet + AGC's (λ 0.01) minus NF-ResNet's final test accuracy at "
               f"the small batch, lr 0.1 (no difference: within ±{AGC_MARGIN:g} points)",
               AGC_MARGIN, "within", UNIT),  # fmt: skip
        measure_agc_small_batch,
    ),
    Claim(
        "agc_threshold",
        "At a small batch NF-ResNets are insensitive to AGC's clipping threshold",
        "2021b Sec. 4.1, Fig. 2 (right)",
        Effect("per seed, the slope of NF-ResNet + AGC's final test accuracy against log2 λ over "
               "λ 0.01, 0.04, 0.16 at the small batch, lr 0.1 (points per doubling of λ; "
               f"±{SLOPE_MARGIN:g} is {4 * SLOPE_MARGIN:g} points over the sweep)",
               SLOPE_MARGIN, "within", "points per doubling"),  # fmt: skip
        measure_agc_threshold,
    ),
    Claim(
        "agc_stability",
        "At a large batch, AGC lets NF-ResNets train stably at larger learning rates",
        "2021b Sec. 4.1, Fig. 2",
        Effect("per seed, the number of lrs of the large batch's grid at which NF-ResNet + AGC "
               "is stable (completed, final train loss < ln 10) minus the number without AGC",
               0.0, ">", "lrs"),  # fmt: skip
        measure_agc_stability,
    ),
)

PAPER = Paper(
    name="nfnet",
    title="Brock et al. 2021a/b (NF-ResNets, AGC)",
    citation='Brock, De & Smith, "Characterizing signal propagation to close the performance gap '
    'in unnormalized ResNets", ICLR 2021 (arXiv:2101.08692); Brock, De, Smith & Simonyan, '
    '"High-Performance Large-Scale Image Recognition Without Normalization", ICML 2021 '
    "(arXiv:2102.06171); at CIFAR-10 scale",
    profiles=PROFILES,
    numbers=NUMBERS,
    claims=CLAIMS,
    figures=figures(SPP_DEPTH),
    table=table,
    layout="{preset}/b{batch}/lr{lr:g}/seed{seed}",
    prepare=prepare,
    setting=SETTING,
)

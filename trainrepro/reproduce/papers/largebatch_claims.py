"""The claims of the largebatch declaration (Goyal et al. 2017; LARS; LAMB; Nado et al. 2021;
Keskar et al. 2017), each decided on a per-seed effect: runs of two cells (preset, batch) that
share a seed are paired, and the difference of their final test accuracies is one value.

Thresholds come from the papers' statements (cited beside each; Goyal et al.'s numbers are
third-party transcriptions, the survey of the paper in papers.md sec. 5 [S]), not from our
numbers. Each claim at a large batch says the regime it was measured in: the quick profile's
B = 2048 is 40 updates in all with a 4-update warmup, Goyal et al.'s 8k on ImageNet ~156
updates an epoch for 90 epochs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainrepro.reproduce.paper import NOT_RUN, Claim, Effect, Measurement, Results, Verdict
from trainrepro.reproduce.papers.largebatch_landscape import (
    DIRECTION_SEEDS,
    RADIUS,
    committed_numbers,
    per_seed,
)

CHANCE = 10.0  # test accuracy (%) of a uniform guess: what a diverged run is worth
DROP = 5.0  # points: "accuracy falls" (Goyal et al., unscaled at 8k: 41.67 against 23.60 error)
KEEPS = 1.0  # points: "no loss of accuracy" to 8k (Goyal et al.: 23.74 against 23.60 error)
KEEPS_64X = 2.0  # points: at 64x, 16k in Goyal et al. (24.79 against 23.60: 1.19 worse)
TRAINS = 20.0  # % test accuracy: twice chance, "trains"
MATCHES = 2.0  # points: Nesterov "can match" LARS / LAMB (Nado et al.; no margin given)
UNIT = "points"
GOYAL_8K = ("Goyal et al. at 8k on ImageNet: ~156 updates an epoch (1.28M images), ~14,000 in "
            "90 epochs, a 5-epoch warmup of ~780 updates")  # fmt: skip


def cells(res: Results) -> dict[tuple[str, int], dict[int, float]]:
    """Final test accuracy (%) by (preset, batch), then by seed; a run that did not complete
    counts as chance."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in res.final().to_dict("records"):
        acc = float(r["test_acc"]) if r["status"] == "completed" else CHANCE
        seed = int(str(r["run_dir"]).rsplit("seed", 1)[1])
        out.setdefault((r["preset"], int(r["batch"])), {})[seed] = acc
    return out


def sizes(res: Results) -> tuple[int, int, int]:
    """(base, 8x the base, largest) batch of the unscaled SGD runs (0s when there are none)."""
    have = sorted({b for (p, b) in cells(res) if p == "sgd"})
    return (have[0], have[0] * 8, have[-1]) if have else (0, 0, 0)


def regime(res: Results, batch: int, preset: str | None = None) -> str:
    """Updates per epoch and in all, and the warmup in updates, of the runs at ``batch`` (of
    ``preset``, else of every preset: the scaled presets' warmup)."""
    runs = res.df[res.df["batch"] == batch]
    if preset is not None:
        runs = runs[runs["preset"] == preset]
    if runs.empty:
        return f"B={batch}: not run"
    per_epoch = int(runs[runs["epoch"] == runs["epoch"].min()]["updates"].max())
    total = int(runs["updates"].max())
    text = f"B={batch}: {total} updates in all ({per_epoch} an epoch)"
    if "schedule.warmup_epochs" in runs:
        warm = runs["schedule.warmup_epochs"].astype(float).max()
        if warm > 0:
            text += f", a warmup of {int(round(warm * per_epoch))} updates"
    return text


def _paired(res: Results, terms: list[tuple[str, int]], combine: Callable[..., float]):
    """Per seed every cell of ``terms`` ran: ``combine(*accuracies)``; and the seeds."""
    have = cells(res)
    seeds = sorted(set.intersection(*(set(have.get(t, {})) for t in terms)))
    values = tuple(combine(*(have[t][s] for t in terms)) for s in seeds)
    means = {f"{p}@{b}": float(np.mean([have[(p, b)][s] for s in seeds])) for p, b in terms}
    return values, seeds, means


def _not_run(terms: list[tuple[str, int]]) -> Verdict:
    where = ", ".join(f"{p} B={b}" for p, b in terms)
    return Verdict(NOT_RUN, f"no seed ran every cell of {where}: every profile declares them "
                   "at seeds 0-2")  # fmt: skip


def _shown(means: dict[str, float]) -> str:
    return ", ".join(f"{k.replace('@', ' B=')} {v:.2f}%" for k, v in means.items())


def measure_unscaled_drop(res: Results) -> Measurement | Verdict:
    base, _, largest = sizes(res)
    terms = [("sgd", base), ("sgd", largest)]
    values, seeds, means = _paired(res, terms, lambda a, b: a - b)
    if not seeds or base == largest:
        return _not_run(terms)
    detail = (f"seeds {seeds}, mean final test accuracy: {_shown(means)}; "
              f"{regime(res, largest, 'sgd')} (paper: 18.07 points at 32x, 8k unscaled, survey "
              "of the paper)")  # fmt: skip
    return Measurement(values, detail, means)


def _recovers(res: Results, batch: int, paper: str) -> Measurement | Verdict:
    base = sizes(res)[0]
    terms = [("sgd_scaled", batch), ("sgd", base)]
    values, seeds, means = _paired(res, terms, lambda a, b: a - b)
    if not seeds or not batch:
        return _not_run(terms)
    plain = cells(res).get(("sgd", batch), {})
    unscaled = [plain[s] for s in seeds if s in plain]
    detail = (f"seeds {seeds}, mean final test accuracy: {_shown(means)}"
              + (f" (unscaled SGD at B={batch}: {np.mean(unscaled):.2f}%)" if unscaled else "")
              + f"; {regime(res, batch, 'sgd_scaled')}; {GOYAL_8K}; paper: {paper}")  # fmt: skip
    return Measurement(values, detail, means)


def measure_scaling_recovers(res: Results) -> Measurement | Verdict:
    return _recovers(res, sizes(res)[1], "23.74% against 23.60% error at 32x (8k), survey of "
                     "the paper")  # fmt: skip


def measure_scaling_largest(res: Results) -> Measurement | Verdict:
    return _recovers(res, sizes(res)[2], "24.79% against 23.60% error at 64x (16k), survey of "
                     "the paper")  # fmt: skip


def measure_layerwise(res: Results) -> Measurement | Verdict:
    largest = sizes(res)[2]
    terms = [("lars", largest), ("lamb", largest)]
    values, seeds, means = _paired(res, terms, min)
    if not seeds or not largest:
        return _not_run(terms)
    detail = (f"seeds {seeds}, mean final test accuracy (a diverged run counts as {CHANCE:g}%): "
              f"{_shown(means)}; {regime(res, largest)}; {GOYAL_8K}")  # fmt: skip
    return Measurement(values, detail, means)


def measure_nesterov(res: Results) -> Measurement | Verdict:
    have = cells(res)
    base = sizes(res)[0]
    batches = sorted(b for (p, b) in have if p == "nesterov" and base and b >= 8 * base)
    terms = [(p, b) for b in batches for p in ("nesterov", "lars", "lamb")]
    if not batches:
        return _not_run([("nesterov", 8 * base), ("lars", 8 * base), ("lamb", 8 * base)])

    def worst_gap(*accs: float) -> float:
        return min(accs[i] - max(accs[i + 1], accs[i + 2]) for i in range(0, len(accs), 3))

    values, seeds, means = _paired(res, terms, worst_gap)
    if not seeds:
        return _not_run(terms)
    gaps = ", ".join(
        f"B={b}: {means[f'nesterov@{b}'] - max(means[f'lars@{b}'], means[f'lamb@{b}']):+.2f}"
        for b in batches
    )
    detail = (f"seeds {seeds}; mean Nesterov − better of LARS and LAMB: {gaps} (none of them "
              f"tuned); {'; '.join(regime(res, b) for b in batches)}")  # fmt: skip
    return Measurement(values, detail, means)


def measure_sharpness(res: Results) -> Measurement | Verdict:
    data = res.extras.get("sharpness")
    rows = per_seed(data) if data else {}
    committed = committed_numbers(res.extras.get("landscape"))
    if not rows:
        return Verdict(NOT_RUN, "needs the unscaled SGD runs' checkpoints at the smallest and the "
                       "largest batch (runs/largebatch[-quick]/sgd/b<B>/seed<k>/checkpoint.pt), "
                       "absent here: a report from the run directories computes it over "
                       f"{len(DIRECTION_SEEDS)} directions per run and keeps it in "
                       f"sharpness.json. Kept meanwhile: {committed}")  # fmt: skip
    b = data.get("batches", ["small", "large"])
    values = tuple(large - small for small, large in rows.values())
    means = {"small": float(np.mean([v[0] for v in rows.values()])),
             "large": float(np.mean([v[1] for v in rows.values()]))}  # fmt: skip
    detail = (f"training seeds {sorted(rows)}, {len(data['directions'])} filter-normalized "
              f"directions each, training loss over {data['samples']} images: mean relative rise "
              f"at ±{RADIUS:g}, B={b[0]} {means['small']:.3f}, B={b[1]} {means['large']:.3f}; "
              f"{committed}")  # fmt: skip
    return Measurement(values, detail, means)


CLAIMS = (
    Claim("unscaled_drop", "Without lr scaling, accuracy falls as the batch grows",
          "Goyal et al. 2017, Table 1 (8k, lr 0.1 unscaled: 41.67% against 23.60% error, "
          "survey of the paper); Keskar et al. 2017",
          Effect("per seed, unscaled SGD's final test accuracy at the base batch minus at the "
                 "largest", DROP, ">", UNIT),
          measure_unscaled_drop),
    Claim("scaling_recovers", "Linear scaling with gradual warmup keeps accuracy up to 8x the "
          "base batch", "Goyal et al. 2017, Sec. 2, Table 1, Fig. 1 (no loss of accuracy to 8k, "
          "32x: 23.74% against 23.60% error, survey of the paper)",
          Effect("per seed, scaled SGD's final test accuracy at 8x the base batch minus unscaled "
                 f"SGD's at the base (at most {KEEPS:g} point below)", -KEEPS, ">", UNIT),
          measure_scaling_recovers),
    Claim("scaling_recovers_largest", "Linear scaling with gradual warmup loses little accuracy "
          "at 64x the base batch (the quick profile's B = 2048: 40 updates in all, a 4-update "
          "warmup; Goyal et al.'s 8k: ~156 updates an epoch for 90 epochs)",
          "Goyal et al. 2017, Fig. 1 (16k, 64x: 24.79% against 23.60% error, survey of the "
          "paper)",
          Effect("per seed, scaled SGD's final test accuracy at the largest batch (64x the base) "
                 f"minus unscaled SGD's at the base (at most {KEEPS_64X:g} points below)",
                 -KEEPS_64X, ">", UNIT),
          measure_scaling_largest),
    Claim("layerwise_stable", "LARS and LAMB train stably at the largest batch (quick: B = 2048, "
          "40 updates in all, a 4-update warmup)",
          "You et al. 2017 (LARS); You et al. 2020 (LAMB)",
          Effect("per seed, the lower of LARS's and LAMB's final test accuracy at the largest "
                 f"batch (a diverged run counts as chance; {TRAINS:g}% is twice chance)", TRAINS,
                 ">", "%"),
          measure_layerwise),
    Claim("nesterov_matches", "With the same care (scaling, warmup, schedule), Nesterov "
          "momentum matches LARS and LAMB (quick: B = 256 and 2048, 390 and 40 updates in all)",
          "Nado et al. 2021, abstract",
          Effect("per seed, the smallest over batches of at least 8x the base of Nesterov's final "
                 f"test accuracy minus the better of LARS's and LAMB's (at most {MATCHES:g} "
                 "points below)", -MATCHES, ">", UNIT),
          measure_nesterov),
    Claim("sharp_minima", "The large-batch solution lies in a sharper minimum",
          "Keskar et al. 2017, Fig. 3; Li et al. 2018, Fig. 1",
          Effect(f"per training seed, the rise of the training loss at ±{RADIUS:g} along "
                 f"{len(DIRECTION_SEEDS)} filter-normalized random directions, relative to the "
                 "loss at the solution (mean over directions), largest-batch SGD run minus "
                 "base-batch run", 0.0, ">", ""),
          measure_sharpness),
)  # fmt: skip

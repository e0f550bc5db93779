"""The claims of the gn declaration (Wu & He 2018; Qiao et al. 2019), each decided on a per-seed
effect: the runs of two cells (norm, batch) that share a seed are paired, and the difference
of their final test errors (points) is one value; seeds one cell lacks are left out.

Thresholds come from the papers' statements (cited beside each), not from our numbers. The
paper's own ImageNet values (third-party transcriptions, papers.md sec. 1 [S]) are quoted in
each claim's detail for comparison of shape only: our scale differs (gn.py, ``SETTING``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from trainrepro.reproduce.paper import NOT_RUN, Claim, Effect, Measurement, Results, Verdict

CLEARLY = 2.0  # points: BN's rise "quickly" (paper, ImageNet: +11.1 from 32 to 2 images/GPU)
STABLE = 1.0  # points: "stable" margin (paper: GN 24.0-24.2 over 32 ... 2 images/GPU)
COMPARABLE = 1.5  # points: GN "comparably good" with BN (paper +0.5; authors' CIFAR-10: +1.3)
MATCH = 1.0  # points: Qiao et al.'s "match or outperform" BN at a large batch
UNIT = "points"
# The scales whose runs can show a claim: every profile runs each norm at a small and a large
# batch.


def cells(res: Results) -> dict[tuple[str, int], dict[int, float]]:
    """Final test error (%) by (preset, batch), then by seed; a run that did not complete
    (diverged) is NaN, so the effects of its seed are left out and said."""
    final = res.final()
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in final.itertuples():
        err = float(r.test_err) if r.status == "completed" else math.nan
        out.setdefault((r.preset, int(r.grid_batch)), {})[int(r.run_seed)] = err
    return out


def batches(res: Results, *presets: str) -> list[int]:
    """The batch sizes at which every one of ``presets`` has runs, ascending."""
    have = cells(res)
    sets = [{b for (p, b) in have if p == preset} for preset in presets]
    return sorted(set.intersection(*sets)) if sets else []


def _paired(
    res: Results, terms: list[tuple[float, str, int]]
) -> tuple[list[float], list[int], list[int]]:
    """Per seed, sum of coefficient x error over ``terms`` (coef, preset, batch), for the seeds
    every term's cell has; and the seeds that were left out because a run diverged."""
    have = cells(res)
    seeds = set.intersection(*(set(have.get((p, b), {})) for _, p, b in terms))
    values, used, diverged = [], [], []
    for s in sorted(seeds):
        v = sum(c * have[(p, b)][s] for c, p, b in terms)
        if math.isfinite(v):
            values.append(v)
            used.append(s)
        else:
            diverged.append(s)
    return values, used, diverged


def _means(res: Results, cellset: list[tuple[str, int]], seeds: list[int]) -> str:
    have = cells(res)
    parts = []
    for p, b in cellset:
        xs = [have[(p, b)][s] for s in seeds if math.isfinite(have[(p, b)].get(s, math.nan))]
        parts.append(f"{p} B={b} {sum(xs) / len(xs):.2f}%" if xs else f"{p} B={b} —")
    return ", ".join(parts)


def _measure(
    res: Results,
    terms: list[tuple[float, str, int]],
    paper: str,
) -> Measurement | Verdict:
    values, used, diverged = _paired(res, terms)
    cellset = list(dict.fromkeys((p, b) for _, p, b in terms))
    if not values:
        why = f"; seeds with a diverged run: {diverged}" if diverged else ""
        return Verdict(NOT_RUN, f"no seed has runs of every cell {cellset}{why}: the quick and "
                       "full profiles declare them (3 seeds each)")  # fmt: skip
    detail = (
        f"per seed {', '.join(f'{v:+.2f}' for v in values)} (seeds {used}); mean test error "
        f"{_means(res, cellset, used)}; {paper}"
    )
    if diverged:
        detail += f"; left out, a run diverged: seeds {diverged}"
    numbers = {f"{p}.b{b}": _cell_mean(res, p, b, used) for p, b in cellset}
    return Measurement(tuple(values), detail, numbers)


def _cell_mean(res: Results, preset: str, batch: int, seeds: list[int]) -> float:
    xs = [cells(res)[(preset, batch)][s] for s in seeds]
    return sum(xs) / len(xs)


def _need(res: Results, presets: tuple[str, ...], least: int = 2) -> list[int] | Verdict:
    common = batches(res, *presets)
    if len(common) < least:
        return Verdict(NOT_RUN, f"needs {' and '.join(presets)} runs at {least} batch sizes "
                       "or more: the quick and full profiles run them")  # fmt: skip
    return common


def _ends_change(preset: str, paper: str) -> Callable[[Results], Measurement | Verdict]:
    """Error at the smallest batch minus at the largest, per seed."""

    def measure(res: Results) -> Measurement | Verdict:
        common = _need(res, (preset,))
        if isinstance(common, Verdict):
            return common
        small, large = common[0], common[-1]
        return _measure(res, [(1.0, preset, small), (-1.0, preset, large)], paper)

    return measure


def measure_ln_in_change(res: Results) -> Measurement | Verdict:
    """Mean of LN's and IN's change (smallest batch minus largest), per seed."""
    common = _need(res, ("ln", "in"))
    if isinstance(common, Verdict):
        return common
    small, large = common[0], common[-1]
    terms = [(c, p, b) for p in ("ln", "in") for c, b in ((0.5, small), (-0.5, large))]
    return _measure(res, terms, "paper: LN, IN and GN do not compute along the batch axis, so "
                    "only the training (updates, lr) differs between batch sizes")  # fmt: skip


def _at(end: int, a: str, b: str, paper: str) -> Callable[[Results], Measurement | Verdict]:
    """``a`` minus ``b`` at their common smallest (end 0) or largest (end -1) batch."""

    def measure(res: Results) -> Measurement | Verdict:
        common = _need(res, (a, b), least=1)
        if isinstance(common, Verdict):
            return common
        batch = common[end]
        return _measure(res, [(1.0, a, batch), (-1.0, b, batch)], paper)

    return measure


def measure_gn_vs_ln_in(res: Results) -> Measurement | Verdict:
    """GN's error minus the better of LN's and IN's, at the largest common batch, per seed."""
    common = _need(res, ("gn", "ln", "in"), least=1)
    if isinstance(common, Verdict):
        return common
    large = common[-1]
    have = cells(res)
    seeds = sorted(set(have[("gn", large)]) & set(have[("ln", large)]) & set(have[("in", large)]))
    values = [have[("gn", large)][s] - min(have[("ln", large)][s], have[("in", large)][s])
              for s in seeds]  # fmt: skip
    keep = [(s, v) for s, v in zip(seeds, values, strict=True) if math.isfinite(v)]
    if not keep:
        return Verdict(NOT_RUN, f"no seed has finished GN, LN and IN runs at B={large}")
    used = [s for s, _ in keep]
    detail = (
        f"B={large}: per seed {', '.join(f'{v:+.2f}' for _, v in keep)} (seeds {used}); mean "
        f"test error {_means(res, [('gn', large), ('ln', large), ('in', large)], used)}; paper "
        "(ImageNet, 32 images/GPU): GN 24.1, LN 25.3, IN 28.4 (survey of the paper)"
    )
    return Measurement(tuple(v for _, v in keep), detail)


def measure_ws_vs_large_bn(res: Results) -> Measurement | Verdict:
    """GN + WS at its smallest batch minus BN at its largest, per seed."""
    ws, bn = batches(res, "gn_ws"), batches(res, "bn")
    if not ws or not bn:
        return Verdict(NOT_RUN, "needs GN + WS and BN runs: the quick and full profiles run them")
    return _measure(res, [(1.0, "gn_ws", ws[0]), (-1.0, "bn", bn[-1])],
                    "paper (Qiao et al., ImageNet ResNet-50): GN + WS 23.72 at 1 image/GPU "
                    "(verified), BN at a large batch about 23.9 (recalled)")  # fmt: skip


_WU = "Wu & He, abstract; Fig. 1, Table 2 (ImageNet ResNet-50)"
_T2 = "paper (ImageNet, images/GPU, survey of the paper)"
CLAIMS = (
    Claim(
        "bn_small_batch",
        "BN's error rises quickly as the batch shrinks",
        _WU,
        Effect(
            "BN's test error at the smallest batch minus at the largest, per seed",
            CLEARLY,
            ">",
            UNIT,
        ),  # fmt: skip
        _ends_change("bn", f"{_T2}: BN 34.7 at 2 against 23.6 at 32, +11.1"),
    ),
    Claim(
        "gn_beats_bn_small",
        "At batch 2, GN has lower error than BN (10.6 points lower on ImageNet)",
        "Wu & He, abstract (verified)",
        Effect("GN's minus BN's test error at the smallest batch, per seed", 0.0, "<", UNIT),
        _at(0, "gn", "bn", "paper (ImageNet, 2 images/GPU): -10.6 (abstract, verified)"),
    ),
    Claim(
        "gn_stable",
        "GN's accuracy is stable across batch sizes",
        _WU,
        Effect(
            "GN's test error at the smallest batch minus at the largest, per seed",
            STABLE,
            "within",
            UNIT,
        ),  # fmt: skip
        _ends_change("gn", f"{_T2}: GN 24.1 at 2 and at 32, 24.0-24.2 in between"),
    ),
    Claim(
        "ln_in_stable",
        "LN's and IN's error, computed without the batch axis like GN's, does not depend on "
        "the batch size either",
        "Wu & He, Sec. 3 (LN, IN, GN normalize each example alone)",
        Effect(
            "mean of LN's and IN's change in test error, smallest batch minus largest, per seed",
            STABLE,
            "within",
            UNIT,
        ),  # fmt: skip
        measure_ln_in_change,
    ),
    Claim(
        "gn_close_to_bn_large",
        "At a typical batch, GN is comparably good with BN",
        "Wu & He, abstract; Table 2 (GN - BN +0.5 at 32 images/GPU); the authors' CIFAR-10 "
        "reference: GN about 1.3 worse than BN (ppwwyyxx/GroupNorm-reproduce, verified)",
        Effect("GN's minus BN's test error at the largest batch, per seed", COMPARABLE, "<", UNIT),
        _at(-1, "gn", "bn", f"{_T2}: +0.5 at 32 and 16"),
    ),
    Claim(
        "gn_beats_ln_in",
        "At a typical batch, GN outperforms the other batch-independent norms (LN, IN)",
        "Wu & He, abstract, Sec. 4.1",
        Effect(
            "GN's test error minus the better of LN's and IN's at the largest batch, per seed",
            0.0,
            "<",
            UNIT,
        ),  # fmt: skip
        measure_gn_vs_ln_in,
    ),
    Claim(
        "ws_helps_gn",
        "Weight Standardization improves GN at micro-batches",
        "Qiao et al., abstract / README",
        Effect("GN + WS's minus GN's test error at the smallest batch, per seed", 0.0, "<", UNIT),
        _at(
            0,
            "gn_ws",
            "gn",
            "paper (ImageNet ResNet-50, 1 image/GPU): GN + WS 23.72 "
            "(verified) against GN about 24.1 (recalled)",
        ),  # fmt: skip
    ),
    Claim(
        "ws_matches_large_bn",
        "GN + WS at 1-2 images per batch matches or beats BN at a large batch",
        "Qiao et al., README ('match or outperform ... BN trained with large batch sizes')",
        Effect(
            "GN + WS's test error at its smallest batch minus BN's at the largest, per seed",
            MATCH,
            "<",
            UNIT,
        ),  # fmt: skip
        measure_ws_vs_large_bn,
    ),
)

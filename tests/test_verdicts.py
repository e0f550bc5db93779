"""Every verdict can go either way: the interval rule itself, and every declared claim of every
paper (read from the registry, so a new claim is covered) fed synthetic per-seed values on
both sides of its threshold, where its status must flip."""

from __future__ import annotations

import math

import pytest

from trainrepro.analysis.intervals import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    seeds_needed,
    status,
    t_critical,
    t_interval,
)
from trainrepro.reproduce.paper import NOT_RUN, Effect, Measurement
from trainrepro.reproduce.papers import PAPERS

CLAIMS = [(p.name, c) for p in PAPERS.values() for c in p.claims]


def test_t_interval_matches_the_textbook():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert iv.mean == 2.0 and iv.sd == pytest.approx(1.0)
    assert iv.low == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-9)
    assert iv.high == pytest.approx(2 + 4.303 / math.sqrt(3), abs=1e-9)
    assert t_critical(1000) == 1.960 and t_critical(35) == t_critical(30)


def test_one_run_is_at_best_inconclusive():
    iv = t_interval([5.0])
    assert math.isinf(iv.low) and math.isinf(iv.high)
    for direction in (">", "<", "within"):
        assert status(iv, direction, 0.0 if direction != "within" else 1.0) == INCONCLUSIVE
    assert seeds_needed(iv, ">", 0.0) is None


@pytest.mark.parametrize(
    "values, direction, threshold, expected",
    [
        ([3.0, 3.2, 2.9], ">", 0.0, PASS),
        ([-3.0, -3.2, -2.9], ">", 0.0, FAIL),
        ([0.5, -0.4, 0.2], ">", 0.0, INCONCLUSIVE),
        ([-3.0, -3.2, -2.9], "<", 0.0, PASS),
        ([0.1, -0.1, 0.05, 0.0, -0.05], "within", 0.5, PASS),
        ([2.0, 2.1, 1.9], "within", 0.5, FAIL),
        # a difference that went undetected is not equivalence
        ([0.1, -1.5, 1.4], "within", 0.5, INCONCLUSIVE),
    ],
)
def test_status_by_the_interval(values, direction, threshold, expected):
    assert status(t_interval(values), direction, threshold) == expected


def test_seeds_needed_settles_the_question_at_the_seen_spread():
    iv = t_interval([0.5, -0.1, 0.6])
    n = seeds_needed(iv, ">", 0.0)
    assert n is not None and n > 3
    # at n seeds with the same mean and sd the interval clears the threshold; at n - 1 not
    assert t_critical(n - 1) * iv.sd / math.sqrt(n) < iv.mean
    assert t_critical(n - 2) * iv.sd / math.sqrt(n - 1) >= iv.mean


def values_around(effect: Effect, side: str) -> tuple[float, ...]:
    """Five tightly spread values well on the ``pass`` or ``fail`` side of the effect's
    threshold (for ``within``: inside or outside the margin)."""
    t = effect.threshold
    scale = max(abs(t), 1.0)
    if effect.direction == "within":
        centre = 0.0 if side == PASS else abs(t) + 3 * scale
    else:
        sign = 1 if effect.direction == ">" else -1
        centre = t + (sign if side == PASS else -sign) * 3 * scale
    spread = 0.01 * scale
    return tuple(centre + spread * k for k in (-2, -1, 0, 1, 2))


@pytest.mark.parametrize("paper, claim", CLAIMS, ids=[f"{p}.{c.key}" for p, c in CLAIMS])
def test_every_claim_declares_an_effect_that_can_pass_and_fail(paper, claim):
    assert isinstance(claim.effect, Effect), (
        f"{paper}.{claim.key} has no declared Effect: it cannot be decided by an interval"
    )
    passing = claim.judge(Measurement(values_around(claim.effect, PASS), "synthetic"))
    failing = claim.judge(Measurement(values_around(claim.effect, FAIL), "synthetic"))
    assert (passing.status, failing.status) == (PASS, FAIL)
    straddling = claim.judge(Measurement((claim.effect.threshold,) * 2 + (1e9, -1e9), "x"))
    assert straddling.status == INCONCLUSIVE and claim.effect.name in straddling.detail


def test_no_finite_value_is_not_run():
    claim = CLAIMS[0][1]
    assert claim.judge(Measurement((math.nan,), "all diverged")).status == NOT_RUN

"""How a paper is declared: its runs per profile, its numbers, its claims and its figures.

A declaration is data plus small functions over :class:`Results`, so the runner, the report,
the results index and the tests treat every paper alike (see trainrepro/reproduce/papers/).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trainrepro.analysis.intervals import (
    DIRECTIONS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Interval,
    describe,
    seeds_needed,
    status,
    t_interval,
)

NOT_RUN = "not run"  # the profile holds no runs for it (or they are missing): say which does
STATUSES = (PASS, FAIL, INCONCLUSIVE, NOT_RUN)


@dataclass(frozen=True)
class Run:
    """One training run: ``conf/experiment/<paper>/<preset>.yaml`` with a seed and overrides,
    in ``runs/<paper>[-quick]/<path>``."""

    path: str
    preset: str
    seed: int
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A scale of the reproduction: ``full`` (the paper's) or ``quick`` (2 CPU cores)."""

    name: str
    runs: tuple[Run, ...]  # in start order: longest first fills the workers best
    config: tuple[str, ...] = ()  # overrides every run gets, e.g. ("profile=smith18_quick",)
    jobs: int = 1
    threads: int | None = None
    note: str = ""  # scale and expected time, for the README and the report

    @property
    def suffix(self) -> str:
        return "" if self.name == "full" else f"-{self.name}"


@dataclass(frozen=True)
class PaperNumber:
    """A number the paper prints, and where (so a reader can check our transcription)."""

    key: str
    value: float
    shown: str  # as the paper writes it: "~80,000", "<6,500", "91.06"
    source: str  # "Table 1", "Sec. 5.2, Fig. 5"


@dataclass(frozen=True)
class Verdict:
    status: str  # one of STATUSES
    detail: str  # the numbers behind it, in words
    numbers: Mapping[str, float] = field(default_factory=dict)
    interval: Interval | None = None  # of the effect, over seeds
    seeds_needed: int | None = None  # for an inconclusive one: seeds that would settle it

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r}: must be one of {STATUSES}")


@dataclass(frozen=True)
class Effect:
    """What a claim is decided on: one number per seed (a paired difference where seeds pair),
    and where the paper's statement puts it: ``>`` or ``<`` the threshold, or ``within`` the
    margin ±threshold (a "no difference" claim, decided by an equivalence test)."""

    name: str  # "SVRG − SGD test-loss gap, with BN minus without"
    threshold: float = 0.0
    direction: str = ">"
    unit: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"effect direction {self.direction!r}: one of {DIRECTIONS}")


@dataclass(frozen=True)
class Measurement:
    """A claim's effect measured on runs: the per-seed values, and the numbers behind them."""

    values: tuple[float, ...]
    detail: str
    numbers: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, the effect that decides it and how it is measured on our runs.

    ``measure`` returns a :class:`Measurement`, or a ``not run`` :class:`Verdict` when the
    runs it needs are missing; :meth:`judge` turns values into pass / fail / inconclusive by
    the effect's 95% interval (trainrepro.analysis.intervals), the same rule for every paper.
    """

    key: str
    statement: str
    source: str  # where the paper makes it
    effect: Effect
    measure: Callable[[Results], Measurement | Verdict]
    profiles: tuple[str, ...] = ("quick", "medium", "full")  # the scales whose runs show it
    scale_note: str = ""  # why another scale cannot

    @property
    def acceptance(self) -> str:
        """The check in words, from the effect: the same words every report uses."""
        e = self.effect
        return f"{e.name}: {describe(e.direction, e.threshold, e.unit)}"

    def judge(self, m: Measurement) -> Verdict:
        """pass / fail / inconclusive from the measured values, with interval and detail."""
        e = self.effect
        values = [v for v in m.values if math.isfinite(v)]
        if not values:
            return Verdict(NOT_RUN, m.detail + "; no finite value of the effect", m.numbers)
        iv = t_interval(values)
        verdict = status(iv, e.direction, e.threshold)
        needed = seeds_needed(iv, e.direction, e.threshold) if verdict == INCONCLUSIVE else None
        text = f"{e.name}: {iv.show(unit=e.unit)}; {m.detail}"
        if verdict == INCONCLUSIVE:
            if needed:
                text += f"; the interval straddles {e.threshold:+g}: about {needed} seeds would "
                text += "settle it at this spread"
            elif iv.n < 2:
                text += "; one run has no spread: run at least 3 seeds"
            else:
                text += f"; the mean sits too near {e.threshold:+g} for any affordable number of "
                text += "seeds to settle it at this spread"
        return Verdict(verdict, text, m.numbers, iv, needed)

    def verdict(self, results: Results) -> Verdict:
        if results.profile not in self.profiles:
            where = ", ".join(self.profiles)
            return Verdict(NOT_RUN, f"the {where} profile runs it" + (
                f": {self.scale_note}" if self.scale_note else ""))  # fmt: skip
        got = self.measure(results)
        return got if isinstance(got, Verdict) else self.judge(got)


@dataclass(frozen=True)
class Figure:
    """A figure file pair ``<name>.{png,pdf}`` drawn by ``draw(results, out_prefix)``."""

    name: str
    caption: str
    draw: Callable[[Results, Path], object]
    needs_run_dirs: str = ""  # an artefact runs.csv lacks ("grad_hist.pt"), or ""


@dataclass(frozen=True)
class Paper:
    name: str  # conf/experiment/<name>/, runs/<name>[-quick]/, results/<name>[-quick]/
    title: str  # short, for headings: "Smith et al. 2018"
    citation: str
    profiles: Mapping[str, Profile]
    numbers: tuple[PaperNumber, ...]
    claims: tuple[Claim, ...]
    figures: tuple[Figure, ...]
    table: Callable[[Results], str]  # markdown: the table beside the paper's numbers, notes
    layout: str  # run path under runs/<name>: "{preset}/seed{seed}"
    prepare: Callable[[Results], None] | None = None  # derived columns and extras
    setting: str = ""  # the paper's own setting, and how our profiles differ from it
    # Papers whose claims are about speed: the report's time-to-target lines (reproduce/speed.py)
    time_to_target: Callable[[Results], list[str]] | None = None

    def number(self, key: str) -> PaperNumber:
        return next(n for n in self.numbers if n.key == key)

    def result_name(self, profile: str) -> str:
        return self.name + self.profiles[profile].suffix


@dataclass
class Results:
    """Every run of one paper at one profile, per epoch, as the checks and figures see it.

    ``df`` has ``run_dir`` (the run's path under ``runs/<name>/``), ``preset`` (its first
    folder), ``status``, ``epoch``, the metrics and the flattened config. ``run_root`` is
    ``runs/<name>`` when the run directories are there, else None (built from runs.csv).
    """

    paper: Paper
    profile: str
    name: str
    df: pd.DataFrame
    run_root: Path | None
    out: Path
    source: str  # where df came from, in words
    extras: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # said in the report: what was kept, why

    def final(self) -> pd.DataFrame:
        """One row per run: its last epoch."""
        return self.df.sort_values("epoch", kind="stable").groupby("run_dir", sort=False).tail(1)


def unfinished_lines(final: pd.DataFrame) -> list[str]:
    """The table's last line naming runs neither completed nor diverged (none: no line), from
    the final rows (``Results.final()``)."""
    unfinished = sorted(final.loc[~final["status"].isin(["completed", "diverged"]), "run_dir"])
    return ["", "Unfinished runs: " + ", ".join(unfinished)] if unfinished else []


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table, or an em dash when there is none."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

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

PASS, FAIL = "pass", "fail"
NOT_SHOWN = "not shown at this scale"  # the profile does not run what the claim needs
NOT_CHECKED = "not checked"  # it should, but runs (or their artefacts) are missing
STATUSES = (PASS, FAIL, NOT_SHOWN, NOT_CHECKED)


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r}: must be one of {STATUSES}")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, and the acceptance check that decides it on our runs."""

    key: str
    statement: str
    source: str  # where the paper makes it
    acceptance: str  # the check in words, with its threshold
    check: Callable[[Results], Verdict]
    profiles: tuple[str, ...] = ("quick", "full")  # the scales whose runs can show it
    scale_note: str = ""  # why another scale cannot

    def verdict(self, results: Results) -> Verdict:
        if results.profile not in self.profiles:
            return Verdict(NOT_SHOWN, self.scale_note or f"runs only at {', '.join(self.profiles)}")
        return self.check(results)


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


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table, or an em dash when there is none."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

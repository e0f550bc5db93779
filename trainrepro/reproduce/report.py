"""Write a paper's report, ``results/<paper>[-quick]/REPORT.md``, beside ``table.md``,
``verdicts.json`` and the figures, then the index of every paper, ``results/README.md``."""

from __future__ import annotations

import json
import math
import os
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from trainrepro.reproduce.data import RUNS_CSV, write_runs_csv
from trainrepro.reproduce.paper import NOT_RUN, Effect, Paper, Results, Verdict

VERDICTS = "verdicts.json"


def _figures(res: Results) -> list[str]:
    """Draw every figure; one whose artefacts are absent is kept from the last report, said."""
    lines = []
    for fig in res.paper.figures:
        prefix = res.out / fig.name
        note = ""
        if fig.needs_run_dirs and res.run_root is None:
            have = prefix.with_suffix(".png").is_file()
            note = (
                f"*Kept from the committed files: it needs the runs' {fig.needs_run_dirs}, which "
                f"runs.csv does not hold, and the run directories are absent.*"
                if have
                else f"*Not drawn: it needs the runs' {fig.needs_run_dirs}; no run directories.*"
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # log axes of single-point curves, etc.
                fig.draw(res, prefix)
        lines += [f"### {fig.name}", "", fig.caption + ".", ""]
        if prefix.with_suffix(".png").is_file():
            lines += [f"![{fig.name}]({fig.name}.png)", "", f"([PDF]({fig.name}.pdf))", ""]
        if note:
            lines += [note, ""]
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _run_environment(res: Results) -> list[str]:
    """What the runs recorded about themselves (summary.json), when their dirs are here."""
    if res.run_root is None:
        return ["- runs' device, versions and commit: in their summary.json, not in runs.csv "
                "(run directories absent)"]  # fmt: skip
    seen: dict[str, set[str]] = {"device": set(), "git": set(), "versions": set()}
    for run in res.df["run_dir"].unique():
        try:
            summary = json.loads((res.run_root / run / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        seen["device"].add(str(summary.get("device")))
        git = summary.get("git") or {}
        seen["git"].add(f"{git.get('commit', '?')[:12]}" + (" (dirty)" if git.get("dirty") else ""))
        versions = summary.get("versions") or {}
        seen["versions"].add(", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    return [f"- runs' {k}: " + "; ".join(sorted(v)) for k, v in seen.items() if v]


def _runs_under_other_code(res: Results) -> list[str]:
    """A warning line when the runs came from more than one version of the code, or from
    uncommitted changes (read from their summary.json; nothing without run directories)."""
    if res.run_root is None:
        return []
    codes = set()
    for run in res.df["run_dir"].unique():
        try:
            git = json.loads((res.run_root / run / "summary.json").read_text()).get("git") or {}
        except (OSError, ValueError):
            continue
        codes.add(str(git.get("commit", "?"))[:12] + ("+changes" if git.get("dirty") else ""))
    if len(codes) > 1 or any(c.endswith("+changes") for c in codes):
        return [f"> **The runs come from {len(codes)} version(s) of the code** "
                f"({', '.join(sorted(codes))}); see Provenance.", ""]  # fmt: skip
    return []


def _provenance(res: Results, command: str, run_seconds: float | None) -> list[str]:
    from trainrepro.engine.records import git_revision, versions

    final = res.final()
    counts = final["status"].value_counts().to_dict()
    wall = final["wall_seconds"].astype(float) if "wall_seconds" in final else None
    lines = [
        f"- command: `{command}`",
        f"- numbers from: {res.source}",
        f"- runs: {len(final)} of the {len(res.paper.profiles[res.profile].runs)} declared ("
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + ")",
    ]
    if wall is not None and wall.notna().any():
        lines.append(
            f"- runs' wall time (each run's last `wall_seconds`): {_hours(wall.sum())} in all, "
            f"longest run {_hours(wall.max())}"
        )
    if run_seconds is not None:
        lines.append(f"- this command's runner: {_hours(run_seconds)} wall time")
    lines += _run_environment(res)
    git = git_revision()
    import matplotlib
    import pandas

    vers = {**versions(), "pandas": pandas.__version__, "matplotlib": matplotlib.__version__}
    cpu = platform.processor() or platform.machine()
    import torch

    if torch.cuda.is_available():
        cpu += ", " + ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
    lines += [
        f"- report written at git revision {git['commit']}"
        + (" (with uncommitted changes)" if git["dirty"] else ""),
        f"- report machine: {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "- report packages: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
    ]
    return lines


def _measured(claim: object, v: Verdict) -> str:
    iv = v.interval
    if iv is None:
        return "—"
    return iv.show(unit=claim.effect.unit).replace(", 95% interval", ";")


def _effect_record(e: Effect) -> dict[str, object]:
    return {"effect": e.name, "unit": e.unit, "direction": e.direction, "threshold": e.threshold}


def _interval_record(v: Verdict) -> dict[str, object]:
    iv = v.interval
    if iv is None:
        return {"mean": None, "low": None, "high": None, "n": 0, "seeds_needed": None}
    finite = math.isfinite(iv.low)
    return {"mean": iv.mean, "low": iv.low if finite else None,
            "high": iv.high if finite else None, "n": iv.n,
            "seeds_needed": v.seeds_needed}  # fmt: skip


def _values(final: pd.DataFrame, column: str) -> str:
    if column not in final:
        return "—"
    values = [v for v in dict.fromkeys(final[column].dropna()) if str(v) != ""]
    shown = [f"{v:,.0f}" if isinstance(v, float) and v.is_integer() else str(v) for v in values]
    return ", ".join(shown[:8]) + (f" (+{len(shown) - 8} more)" if len(shown) > 8 else "") or "—"


def _what_was_run(res: Results) -> list[str]:
    """Model, data, epochs, batch sizes, precision, seeds and time of the runs, read from
    them; and how that differs from the paper's setting (the declaration's own words)."""
    final = res.final()
    lines = [f"- profile: {res.paper.profiles[res.profile].note}"]
    if len(final):
        wall = final["wall_seconds"].astype(float) if "wall_seconds" in final else None
        seeds = final["seed"].nunique() if "seed" in final else 0
        lines += [
            f"- models: {_values(final, 'model.name')}; normalization: "
            f"{_values(final, 'normalization.name')}; optimizers: "
            f"{_values(final, 'optimizer.name')}",
            f"- data: {_values(final, 'dataset.name')}, training images: "
            f"{_values(final, 'dataset.train_size')} (blank: the whole training set)",
            f"- epochs: {_values(final, 'epoch')}; batch sizes at the end: "
            f"{_values(final, 'batch_size')}; precision: {_values(final, 'precision')}",
            f"- runs: {len(final)}, seeds per run setting: up to {seeds}"
            + (f"; wall time of the runs: {_hours(wall.sum())}" if wall is not None
               and wall.notna().any() else ""),  # fmt: skip
        ]
    if res.paper.setting:
        lines.append(f"- the paper's setting, and how this differs: {res.paper.setting}")
    return lines


def _time_to_target(res: Results) -> list[str]:
    """The section of a paper that compares speed (``Paper.time_to_target``); none: nothing."""
    if res.paper.time_to_target is None:
        return []
    return ["## Time to target", "", *res.paper.time_to_target(res), ""]


def verdicts(res: Results) -> list[tuple[object, Verdict]]:
    """(claim, verdict) per declared claim; a check that raises is reported, not hidden."""
    out = []
    for claim in res.paper.claims:
        try:
            verdict = claim.verdict(res)
        except (KeyError, ValueError, IndexError) as e:
            verdict = Verdict(NOT_RUN, f"the measurement failed on these runs: {e!r}")
        out.append((claim, verdict))
    return out


def write(res: Results, command: str, run_seconds: float | None = None) -> Path:
    """REPORT.md, table.md, verdicts.json and (from run dirs) runs.csv in ``res.out``; then
    the results index. Returns REPORT.md's path."""
    paper, out = res.paper, res.out
    out.mkdir(parents=True, exist_ok=True)
    if res.run_root is not None:
        write_runs_csv(res)
    table = paper.table(res)
    (out / "table.md").write_text(table)
    figures = _figures(res)
    judged = verdicts(res)
    from trainrepro.engine.records import git_revision

    git = git_revision()
    lines = [
        f"# {paper.title}: {res.name}",
        "",
        *([f"> **Written from a working tree with uncommitted changes** (at {git['commit'][:12]}): "
           "no commit holds the code that wrote this report.", ""] if git.get("dirty") else []),
        *_runs_under_other_code(res),
        f"{paper.citation}. Profile **{res.profile}**: {paper.profiles[res.profile].note}. "
        f"Generated by `{command}`; do not edit.",
        "",
        "## What was run",
        "",
        *_what_was_run(res),
        "",
        "## Claims",
        "",
        "A claim passes or fails only when the 95% interval of its effect over seeds lies wholly "
        "on one side of its threshold (inside its margin, for a claim of no difference); an "
        "interval that straddles it is inconclusive, with the seeds that would settle it.",
        "",
        "| claim | where | effect and acceptance | measured | verdict |",
        "|---|---|---|---|---|",
        *(f"| {c.statement} | {c.source} | {c.acceptance} | {_measured(c, v)} | **{v.status}** |"
          for c, v in judged),  # fmt: skip
        "",
        *(f"- `{c.key}` (**{v.status}**): {v.detail}" for c, v in judged),
        "",
        "## Table",
        "",
        # The table's own title is this report's; its rows and notes follow unchanged.
        *table.split("\n", 2)[2].rstrip("\n").split("\n"),
        "",
        *_time_to_target(res),
        "## Figures",
        "",
        *figures,
    ]
    if res.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in res.notes), ""]
    lines += ["## Provenance", "", *_provenance(res, command, run_seconds)]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    record = {
        "paper": paper.name,
        "profile": res.profile,
        "name": res.name,
        "source": res.source,
        "claims": [
            {"key": c.key, "statement": c.statement, "source": c.source,
             "acceptance": c.acceptance, "status": v.status, "detail": v.detail,
             **_effect_record(c.effect), **_interval_record(v),
             "numbers": dict(v.numbers)}
            for c, v in judged
        ],
    }  # fmt: skip
    (out / VERDICTS).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    # The index lists results/<paper>[-quick]; a report sent elsewhere (--out) leaves it alone.
    if out.name == paper.result_name(res.profile):
        write_index(out.parent)
    return path


def write_index(results_root: Path, papers: Sequence[Paper] | None = None) -> Path:
    """``results/README.md``: every declared paper, each profile's verdict per claim."""
    from trainrepro.reproduce.papers import PAPERS

    papers = list(PAPERS.values()) if papers is None else list(papers)
    lines = [
        "# Results",
        "",
        "Generated by `trainrepro reproduce <paper> --profile quick|full` from each report's "
        f"`{VERDICTS}`; do not edit. Each folder holds `REPORT.md` (claims, table beside the "
        f"paper's numbers, figures, provenance), `table.md`, the figures and `{RUNS_CSV}`.",
        "",
    ]
    lines += [
        "A verdict is pass or fail only when the 95% interval of the claim's effect over seeds "
        "lies wholly on one side of its threshold; inconclusive when it straddles it; not run "
        "when the profile holds no runs for it.",
        "",
        "| paper | profile | claim | where | verdict | effect | mean | 95% interval | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for paper in papers:
        found = False
        for profile in paper.profiles:
            name = paper.result_name(profile)
            record_path = results_root / name / VERDICTS
            if not record_path.is_file():
                continue
            found = True
            record = json.loads(record_path.read_text())
            for c in record["claims"]:
                lines.append(
                    f"| [{paper.title}]({name}/REPORT.md) | {profile} | {c['statement']} | "
                    f"{c['source']} | **{c['status']}** | {c.get('effect') or '—'} | "
                    f"{_num(c.get('mean'))} | {_span(c)} | {c.get('n') or '—'} |"
                )
        if not found:
            missing.append(paper)
    lines.append("")
    for paper in missing:
        lines += [f"{paper.title}: not reproduced yet "
                  f"(`trainrepro reproduce {paper.name} --profile quick`).", ""]  # fmt: skip
    lines += ["## Papers", ""]
    lines += [f"- **{p.title}**: {p.citation}." for p in papers]
    lines.append("")
    path = results_root / "README.md"
    results_root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def _num(x: object) -> str:
    return "—" if x is None else f"{float(x):+.3g}"


def _span(c: dict) -> str:
    if c.get("low") is None:
        return "—" if not c.get("n") else "unbounded (one run)"
    return f"[{_num(c['low'])}, {_num(c['high'])}]"


"""trainrepro/reproduce: every declared paper (read from the registry, so a new paper is
covered) is complete, lists its runs, reports from a synthetic runs.csv, and re-derives the
committed results/<paper>[-quick]/table.md from the committed runs.csv."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from support import CONF_DIR, REPO, make_cfg

from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import STATUSES
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.report import verdicts

NAMES = sorted(PAPERS)
PROFILES = ("quick", "medium", "full")


def presets_of(name: str) -> set[str]:
    folder = CONF_DIR / "experiment" / name
    return {p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")}


@pytest.mark.parametrize("name", NAMES)
def test_declaration_is_complete(name):
    paper = PAPERS[name]
    assert paper.name == name and paper.title and paper.citation
    assert set(paper.profiles) == set(PROFILES)
    presets = presets_of(name)
    assert presets, f"conf/experiment/{name}/ has no presets"
    # Every preset runs at the paper's scale; every run names an existing preset.
    assert {r.preset for r in paper.profiles["full"].runs} == presets
    depth = paper.layout.count("/") + 1
    for profile in paper.profiles.values():
        assert profile.runs and profile.note and profile.jobs >= 1
        paths = [r.path for r in profile.runs]
        assert len(set(paths)) == len(paths), "two runs in one directory"
        for run in profile.runs:
            assert run.preset in presets
            assert run.path.count("/") + 1 == depth and run.path.endswith(f"seed{run.seed}")
    claims = [c.key for c in paper.claims]
    assert claims and len(set(claims)) == len(claims)
    for claim in paper.claims:
        assert claim.statement and claim.source and claim.acceptance and callable(claim.measure)
        assert set(claim.profiles) <= set(PROFILES)
        assert set(claim.profiles) == set(PROFILES) or claim.scale_note
    keys = [n.key for n in paper.numbers]
    assert len(set(keys)) == len(keys)
    for number in paper.numbers:
        assert number.source and number.shown and math.isfinite(number.value)
    names = [f.name for f in paper.figures]
    assert names and len(set(names)) == len(names) and all(f.caption for f in paper.figures)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_every_preset_composes_with_its_profile(name, profile):
    paper = PAPERS[name]
    prof = paper.profiles[profile]
    first = {}
    for run in prof.runs:
        first.setdefault(run.preset, run)
    for run in first.values():
        cfg = make_cfg(f"+experiment={name}/{run.preset}", *prof.config, *run.overrides)
        assert cfg.epochs > 0


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_dry_run_lists_the_runs(name, profile, tmp_path, capsys):
    paper = PAPERS[name]
    runs = paper.profiles[profile].runs
    done = tmp_path / runs[0].path
    done.mkdir(parents=True)
    (done / "summary.json").write_text('{"status": "completed"}')
    args = [name, "--profile", profile, "--dry-run", "--runs-root", str(tmp_path)]
    assert reproduce(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(runs) + 2 and f"{len(runs)} runs" in lines[-2]
    assert lines[-1].startswith("estimate: ")  # from the committed runs.csv, or why none
    for line, run in zip(lines, runs, strict=False):
        state, run_dir, *overrides = line.split()
        assert state == ("done" if run is runs[0] else "fresh")
        assert run_dir == str(tmp_path / run.path)
        assert overrides[0] == f"+experiment={name}/{run.preset}"
        assert f"seed={run.seed}" in overrides
        assert set(paper.profiles[profile].config) <= set(overrides)
    assert not (tmp_path / runs[1].path).exists()  # a dry run creates nothing


def synthetic_csv(name: str, path) -> pd.DataFrame:
    """Three epochs per declared quick run, with the run's overrides as config columns."""
    rows = []
    for i, run in enumerate(PAPERS[name].profiles["quick"].runs):
        config = dict(o.split("=", 1) for o in run.overrides)
        config.setdefault("optimizer.lr", "0.1")
        for epoch in (1, 2, 3):
            acc = 10.0 + epoch * (10 + i % 3)
            rows.append(
                {
                    "run_dir": f"runs/{name}-quick/{run.path}", "status": "completed",
                    "epoch": epoch, "updates": 100 * epoch * (1 + i % 2), "samples": 3200 * epoch,
                    "lr": 0.1 / epoch, "batch_size": 32 * epoch, "momentum": 0.9,
                    "noise_scale": 10.0 / epoch, "train_loss": 2.0 / epoch, "train_acc": acc,
                    "test_loss": 2.1 / epoch, "test_acc": acc, "wall_seconds": 5.0 * epoch,
                    "seed": run.seed, **{k: float(v) for k, v in config.items()},
                }
            )  # fmt: skip
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


@pytest.mark.parametrize("name", NAMES)
def test_report_from_a_synthetic_runs_csv(name, tmp_path):
    paper = PAPERS[name]
    out = tmp_path / "results" / f"{name}-quick"
    out.mkdir(parents=True)
    synthetic_csv(name, out / "runs.csv")
    args = [name, "--profile", "quick", "--report-only", "--runs-root", str(tmp_path / "none")]
    assert reproduce([*args, "--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    record = json.loads((out / "verdicts.json").read_text())
    assert [c["key"] for c in record["claims"]] == [c.key for c in paper.claims]
    for claim, entry in zip(paper.claims, record["claims"], strict=True):
        assert entry["status"] in STATUSES
        assert f"`{claim.key}` (**{entry['status']}**)" in report
    for fig in paper.figures:
        assert f"### {fig.name}" in report
        if not fig.needs_run_dirs:
            assert (out / f"{fig.name}.png").stat().st_size > 0
        else:  # neither the run dirs nor a committed figure: the report says so
            assert "Not drawn: it needs the runs'" in report
    assert "## Provenance" in report and "git revision" in report
    assert f"runs: {len(paper.profiles['quick'].runs)} of the" in report
    assert report.count("\n|") > 3  # the claims and the table
    assert "## What was run" in report and report.index("## What was run") < report.index(
        "## Claims")
    index = (tmp_path / "results" / "README.md").read_text()
    for other in PAPERS.values():
        assert other.title in index
    for entry in record["claims"]:
        assert f"| {entry['statement']} | {entry['source']} | **{entry['status']}** |" in index


@pytest.mark.parametrize("dirty", [True, False])
def test_a_report_from_a_dirty_tree_says_so_at_its_top(dirty, tmp_path, monkeypatch):
    from trainrepro.engine import records

    rev = {"commit": "0" * 40, "dirty": dirty, **({"diff_sha256": "f" * 64} if dirty else {})}
    monkeypatch.setattr(records, "git_revision", lambda: rev)
    out = tmp_path / "results" / "gn-quick"
    out.mkdir(parents=True)
    synthetic_csv("gn", out / "runs.csv")
    args = ["gn", "--profile", "quick", "--report-only", "--runs-root", str(tmp_path / "none")]
    assert reproduce([*args, "--out", str(out)]) == 0
    head = (out / "REPORT.md").read_text().split("## What was run")[0]
    assert ("uncommitted changes" in head) == dirty


def test_a_report_sent_elsewhere_writes_no_index_beside_it(tmp_path):
    """Only results/<paper>[-quick] feeds the index; --out results/bench/x must not leave a
    results/bench/README.md listing every paper as not reproduced."""
    out = tmp_path / "bench" / "smith18-quick-variant"
    out.mkdir(parents=True)
    synthetic_csv("smith18", out / "runs.csv")
    args = ["smith18", "--profile", "quick", "--report-only", "--runs-root", str(tmp_path / "none")]
    assert reproduce([*args, "--out", str(out)]) == 0
    assert (out / "REPORT.md").is_file()
    assert not (tmp_path / "bench" / "README.md").exists()


def committed(name: str) -> list[str]:
    paper = PAPERS[name]
    return [p for p in PROFILES if (REPO / "results" / paper.result_name(p) / "runs.csv").is_file()]


@pytest.mark.parametrize(
    "name, profile", [(n, p) for n in NAMES for p in committed(n)] or [pytest.param("", "")]
)
def test_committed_runs_csv_reproduces_the_committed_table(name, profile):
    if not name:
        pytest.skip("no committed results yet")
    paper = PAPERS[name]
    out = REPO / "results" / paper.result_name(profile)
    res = results(paper, profile, out, None, out / "runs.csv")  # reads only
    rows = [line for line in paper.table(res).splitlines() if line.startswith("|")]
    table_md = (out / "table.md").read_text().splitlines()
    committed_rows = [line for line in table_md if line.startswith("|")]
    assert rows == committed_rows
    saved = json.loads((out / "verdicts.json").read_text())
    assert {c["key"]: c["status"] for c in saved["claims"]} == {
        c.key: v.status for c, v in verdicts(res)
    }
    index = (REPO / "results" / "README.md").read_text()
    assert re.search(rf"\({re.escape(paper.result_name(profile))}/REPORT.md\)", index)


def test_overrides_after_the_paper_reach_every_run(tmp_path, capsys):
    args = ["largebatch", "--profile", "quick", "--dry-run", "--runs-root", str(tmp_path)]
    assert reproduce([*args, "precision=fp32", "epochs=2"]) == 0
    lines = capsys.readouterr().out.splitlines()[:-2]  # the runs, not the count and estimate
    assert lines and all(
        line.split()[-3:-1] == ["precision=fp32", "epochs=2"]
        and line.split()[-1].startswith("seed=")
        for line in lines
    )
    for bad in ("seed=3", "+experiment=gn/bn", "precision"):
        assert reproduce([*args, bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: override={bad}: ")


def test_a_key_this_machine_cannot_run_stops_before_any_run(tmp_path, monkeypatch, capsys):
    from trainrepro.engine import build

    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: False)
    for split in ("train", "test"):  # the folders the preflight looks for, so data is no issue
        (tmp_path / "data" / "cifar10" / split).mkdir(parents=True)
    monkeypatch.setenv("TRAINREPRO_DATA", str(tmp_path / "data"))
    root = tmp_path / "runs"
    args = ["largebatch", "--profile", "quick", "--runs-root", str(root)]
    assert reproduce(args) == 2  # the quick profile asks for bf16
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision=bf16: this CPU has no bf16 units" in err[0]
    assert err[0].endswith("; no run started") and not root.exists()
    capsys.readouterr()
    assert reproduce([*args, "precision=fp32", "--dry-run"]) == 0
    assert "precision" not in capsys.readouterr().err


def test_a_bad_key_in_any_run_stops_them_all_before_the_first(tmp_path, capsys):
    """The preflight gives every run the trainer's data-free checks, not just the first."""
    root = tmp_path / "runs"
    assert reproduce(["gn", "--profile", "quick", "--runs-root", str(root), "optimizer.lr=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    n = len(PAPERS["gn"].profiles["quick"].runs)
    assert len(err) == 1 and "optimizer.lr=-1: must be > 0" in err[0], err
    assert f"(and {n - 1} more runs); no run started" in err[0] and not root.exists()


def test_committed_files_carry_no_machine_paths(monkeypatch, tmp_path):
    from trainrepro.engine.records import portable_path, portable_paths

    monkeypatch.setenv("TRAINREPRO_DATA", str(tmp_path))
    assert portable_path(str(tmp_path / "cifar10")) == "$TRAINREPRO_DATA/cifar10"
    assert portable_path(str(tmp_path)) == "$TRAINREPRO_DATA"
    assert portable_path("/home/someone/datasets/cifar10") == "<local>/cifar10"
    assert portable_path("data") == "data"
    # a command and a config as lr-find's report records them
    recorded = ["lr-find", "--out", "/tmp/x/out", f"dataset.root={tmp_path}", "lr=0.1"]
    assert portable_paths({"command": recorded, "n": 1}) == {
        "command": ["lr-find", "--out", "<local>/out", "dataset.root=$TRAINREPRO_DATA", "lr=0.1"],
        "n": 1,
    }

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for path in (REPO / "results").rglob("*.json"):
        found = [s for s in strings(json.loads(path.read_text())) if "=/" in s or s[:1] == "/"]
        assert not found, f"{path}: machine paths {found[:3]}"
    for csv in (REPO / "results").rglob("runs.csv"):
        roots = pd.read_csv(csv, usecols=lambda c: c.endswith(".root"))
        for column in roots:
            values = roots[column].dropna().astype(str)
            assert not values.str.startswith("/").any(), f"{csv}: {column} holds a machine path"


def test_every_committed_verdict_uses_the_four_statuses():
    """Reports anywhere under results/ (the bench A/B copies too) speak the current rules."""
    records = list((REPO / "results").rglob("verdicts.json"))
    # The seven papers whose quick profiles have run; the issue-21 papers are declared only.
    assert len(records) >= 7
    for path in records:
        for claim in json.loads(path.read_text())["claims"]:
            assert claim["status"] in STATUSES, f"{path}: {claim['key']} says {claim['status']}"

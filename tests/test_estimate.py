"""The estimate `trainrepro reproduce` prints before its runs start: each run's measured wall
time from the committed runs.csv, laid out on the workers in order; none, said so, when the
profile was never run."""

from __future__ import annotations

import json

import pytest
from support import REPO, cli

from trainrepro.reproduce.estimate import estimate_line, makespan, measured_seconds


def test_makespan_lays_the_runs_out_in_order_on_the_workers():
    assert makespan([10, 10, 10, 10], 2) == 20
    assert makespan([30, 10, 10, 10], 2) == 30  # the long run first: the others fit beside it
    assert makespan([10, 10, 10, 30], 2) == 40  # last: it starts when a worker frees up
    assert makespan([5, 7], 8) == 7 and makespan([], 2) == 0


def write_csv(path, rows):
    lines = ["run_dir,epoch,wall_seconds,device"]
    lines += [f"runs/p-quick/{run},{epoch},{seconds},cpu" for run, epoch, seconds in rows]
    path.write_text("\n".join(lines) + "\n")


def test_the_last_row_of_each_run_is_its_wall_time(tmp_path):
    write_csv(tmp_path / "runs.csv", [("a/seed0", 1, 30), ("a/seed0", 2, 60), ("b/seed0", 2, 90)])
    seconds, devices = measured_seconds(tmp_path / "runs.csv")
    assert seconds == {("a", "seed0"): 60.0, ("b", "seed0"): 90.0} and devices == "cpu"


def test_runs_done_are_left_out_and_unmeasured_ones_counted_at_the_median(tmp_path):
    csv = tmp_path / "runs.csv"
    write_csv(csv, [("a/seed0", 1, 600), ("b/seed0", 1, 1200), ("c/seed0", 1, 1800)])
    root = tmp_path / "runs"
    specs = [(root / name / "seed0", []) for name in ("a", "b", "c", "new")]
    done = root / "c" / "seed0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"status": "completed"}))
    line = estimate_line(specs, root, csv, jobs=1)
    # a (10 min) + b (20) + new at the median of a, b, c (20): 50 min, one at a time
    assert line.startswith("estimate: about 50 min for 3 of 4 runs, 1 at a time")
    assert "measured on cpu; 1 without a measurement counted at the median" in line


def test_a_profile_never_run_has_no_estimate_and_says_why(tmp_path):
    line = estimate_line([(tmp_path / "a", [])], tmp_path, tmp_path / "runs.csv", jobs=2)
    assert line.startswith("estimate: none for 1 runs: ") and "has not been run" in line


@pytest.mark.parametrize("paper", ["radam", "smith18"])
def test_the_dry_run_prints_the_committed_profiles_estimate(tmp_path, paper):
    result = cli("reproduce", paper, "--profile", "quick", "--dry-run", "--runs-root",
                 str(tmp_path / "none"), "--out", str(REPO / f"results/{paper}-quick"),
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("estimate: about ") and "measured on cpu" in last
    assert list(tmp_path.iterdir()) == []


def test_a_profile_the_paper_lacks_is_one_line(tmp_path, monkeypatch, capsys):
    """Every paper may declare every profile by now, so gn stands in without its medium one."""
    import dataclasses

    from trainrepro.reproduce.cli import main as reproduce
    from trainrepro.reproduce.papers import PAPERS

    gn = PAPERS["gn"]
    lacking = {k: v for k, v in gn.profiles.items() if k != "medium"}
    monkeypatch.setitem(PAPERS, "gn", dataclasses.replace(gn, profiles=lacking))
    args = ["gn", "--profile", "medium", "--dry-run", "--runs-root", str(tmp_path / "none")]
    assert reproduce(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --profile=medium: gn declares no such profile yet; declared: full, quick"
    ]
    assert list(tmp_path.iterdir()) == []

"""scripts/run_experiments.py, the restartable engine of the reproduce targets."""

from __future__ import annotations

import importlib.util
import json

import pytest
from support import REPO, TINY

spec = importlib.util.spec_from_file_location(
    "run_experiments", REPO / "scripts/run_experiments.py"
)
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def test_parse_runs_skips_blanks_and_comments_and_refuses_duplicates(tmp_path):
    runs = runner.parse_runs(["", "# a comment", "a/b seed=0 'x=1 2'", "a/c"])
    assert [(str(d), o) for d, o in runs] == [("a/b", ["seed=0", "x=1 2"]), ("a/c", [])]
    with pytest.raises(SystemExit, match="listed twice"):
        runner.parse_runs(["a/b seed=0", "a/b seed=1"])


@pytest.mark.parametrize(
    "files, expected",
    [
        ({}, "fresh"),
        ({"checkpoint.pt": b"x"}, "resume"),
        ({"checkpoint.pt": b"x", "summary.json": b'{"status": "interrupted"}'}, "resume"),
        ({"summary.json": b'{"status": "completed"}'}, "done"),
        ({"summary.json": b'{"status": "diverged"}'}, "done"),
        ({"summary.json": b"{not json"}, "fresh"),
    ],
)
def test_status_of(tmp_path, files, expected):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert runner.status_of(tmp_path) == expected


def test_runs_then_keeps_then_reports_failures(tmp_path, capsys):
    tiny = " ".join(o for o in TINY if not o.startswith("epochs")) + " epochs=1"
    lines = tmp_path / "runs.txt"
    lines.write_text(f"{tmp_path}/ok seed=0 {tiny}\n{tmp_path}/bad seed=0 {tiny} optimizer.lr=-1\n")
    assert runner.main(["--runs", str(lines), "--jobs", "2", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "ok/summary.json").read_text())["status"] == "completed"
    assert "bad: FAILED (exit 2)" in out and "2 runs (1 failed or interrupted)" in out
    assert "optimizer.lr=-1" in (tmp_path / "bad.log").read_text()
    lines.write_text(f"{tmp_path}/ok seed=0 {tiny}\n")
    assert runner.main(["--runs", str(lines)]) == 0
    assert "ok: done, kept" in capsys.readouterr().out


def test_an_interrupted_run_resumes_only_under_the_code_that_started_it(tmp_path, capsys):
    """Half a run under one version of the code and half under another is neither: the runner
    refuses unless told, naming both versions; without a stamp (older logs) it resumes."""
    from trainrepro.engine import runner as engine_runner

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"x")  # state: resume
    log = tmp_path / "r.log"
    log.write_text("== 2026-01-01T00:00:00+00:00 code 0123456789ab python -m trainrepro\n")
    assert engine_runner.code_of(log) == "0123456789ab"
    ok = engine_runner.run_one(run_dir, ["optimizer.lr=-1"], None, code="feedfacecafe")
    assert not ok
    out = capsys.readouterr().out
    assert "NOT resumed" in out and "0123456789ab" in out and "feedfacecafe" in out
    assert "--allow-other-code" in out
    assert log.read_text().count("== ") == 1  # nothing started
    # told to: it starts (and here fails on the bad key, which shows it ran)
    assert not engine_runner.run_one(run_dir, ["optimizer.lr=-1"], None, True, "feedfacecafe")
    assert "FAILED" in capsys.readouterr().out
    assert engine_runner.code_of(log) == "feedfacecafe"
    log.write_text("== 2026-01-01T00:00:00+00:00 python -m trainrepro\n")  # no stamp
    assert engine_runner.code_of(log) is None

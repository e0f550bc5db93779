"""Sweeps survive a kill: re-running the same Hydra multirun command, or the same runner list,
skips finished jobs, resumes interrupted ones, and the collected CSV has no duplicate rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from support import REPO, TINY, cli, metrics_without_timings, tiny_cfg

from trainrepro.analysis.curves import collect
from trainrepro.engine.train import train

# 16 updates an epoch, 3 epochs: long enough for the test to signal a job in flight.
RUN = (
    *[o for o in TINY if not o.startswith(("epochs", "batch_size"))],
    "epochs=3",
    "batch_size=32",
)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def statuses(folders: list[Path]) -> list[str | None]:
    return [
        json.loads((f / "summary.json").read_text())["status"]
        if (f / "summary.json").exists()
        else None
        for f in folders
    ]


def test_killed_multirun_rerun_skips_resumes_and_never_duplicates(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    cmd = [sys.executable, "-m", "trainrepro", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(sweep / "1" / "metrics.csv", proc)  # job 1 has finished an epoch
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    jobs = [sweep / str(i) for i in range(3)]
    first = statuses(jobs)
    assert first[0] == "completed" and "interrupted" in first and first[2] != "completed"
    interrupted = jobs[first.index("interrupted")]

    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{jobs[0]}: finished earlier, skipped" in again.stdout
    assert statuses(jobs) == ["completed"] * 3

    df = collect([sweep])
    assert len(df) == 3 * 3
    assert not df.duplicated(["run_dir", "epoch"]).any()
    seed = first.index("interrupted")
    reference = tmp_path / "reference"
    train(tiny_cfg(*RUN, f"seed={seed}"), reference)
    pd.testing.assert_frame_equal(
        metrics_without_timings(interrupted), metrics_without_timings(reference), check_exact=True
    )


def test_rerun_into_a_sweep_of_another_config_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    base = ["-m", *RUN, "epochs=1", f"hydra.sweep.dir={sweep}"]
    assert cli(*base, "seed=0,1", cwd=tmp_path).returncode == 0
    result = cli(*base, "seed=5,1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: seed=5: differs from"), result.stderr
    assert "finished run" in result.stderr


def test_killed_runner_stops_its_runs_at_a_checkpoint_and_resumes_them(tmp_path):
    lines = tmp_path / "runs.txt"
    run_dirs = [tmp_path / "a", tmp_path / "b"]
    lines.write_text("".join(f"{d} {' '.join(RUN)} seed={i}\n" for i, d in enumerate(run_dirs)))
    cmd = [sys.executable, str(REPO / "scripts/run_experiments.py"), "--runs", str(lines)]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "2", "--threads", "1"], stdout=subprocess.PIPE, text=True
    )
    for d in run_dirs:
        wait_for(d / "metrics.csv", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    assert statuses(run_dirs) == ["interrupted", "interrupted"]
    assert out.count("interrupted after") == 2
    # Each run got the signal once: it checkpointed rather than stopping at once.
    assert all("received twice" not in (d.parent / f"{d.name}.log").read_text() for d in run_dirs)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout
    assert again.stdout.count("started (resume=true)") == 2
    assert statuses(run_dirs) == ["completed", "completed"]
    assert not collect(run_dirs).duplicated(["run_dir", "epoch"]).any()

"""Runs placed on GPUs and CPU threads (trainrepro/engine/placement.py): the rules, the
environment each run gets, and that no GPU ever holds more runs than --jobs-per-gpu. The GPUs
are pretended (``visible=``), and the runs are stand-in processes, so this runs on any CPU."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from support import REPO

from trainrepro.engine import placement, runner
from trainrepro.errors import ConfigError


def stand_in(monkeypatch, fake) -> None:
    """Training processes become ``fake``; every other process (git, for the code stamp) runs."""
    real = subprocess.Popen

    def popen(cmd, **kwargs):
        is_run = cmd[1:3] == ["-m", "trainrepro"]
        return fake(cmd, **kwargs) if is_run else real(cmd, **kwargs)

    monkeypatch.setattr(runner.subprocess, "Popen", popen)


def test_cpu_runs_share_the_cores():
    assert placement.plan(None, None, default_jobs=2, cores=16) == placement.Placement(2, 8)
    assert placement.plan(4, None, cores=2).threads == 1  # never 0 threads
    assert placement.plan(2, 1, cores=2) == placement.Placement(2, 1)


def test_a_profiles_threads_are_capped_and_said_but_an_explicit_excess_is_refused():
    capped = placement.plan(None, None, default_jobs=4, default_threads=4, cores=8)
    assert capped.threads == 2 and "capped at 2" in capped.note
    with pytest.raises(ConfigError, match=r"--threads=3: 2 runs x 3 threads exceed the 4 CPU"):
        placement.plan(2, 3, cores=4)


def test_gpus_times_jobs_per_gpu_is_the_number_of_runs_at_a_time():
    where = placement.plan(None, None, "0,1", 4, cores=16, visible=2)
    assert (where.jobs, where.threads, where.gpus, where.jobs_per_gpu) == (8, 2, ("0", "1"), 4)
    assert where.describe() == "8 at a time on GPU 0,1 (4 per GPU), 2 CPU thread(s) each"
    assert placement.plan(8, None, "0,1", 4, cores=16, visible=2).jobs == 8  # agreeing --jobs


@pytest.mark.parametrize(
    "args, match",
    [
        ((None, None, None, 2), r"--jobs-per-gpu=2: needs --gpus"),
        ((3, None, "0,1", 2), r"--jobs=3: with --gpus the runs at a time are GPUs x "),
        ((None, None, "0,0", None), r"--gpus=0,0: names a GPU twice"),
        ((None, None, "a", None), r"--gpus=a: must be GPU indices"),
        ((None, None, "2", None), r"--gpus=2: GPU 2 does not exist; 2 visible"),
        ((None, None, "0", 0), r"--jobs-per-gpu=0: must be >= 1"),
        ((0, None, None, None), r"--jobs=0: must be >= 1"),
    ],
)
def test_bad_placements_are_one_line(args, match):
    with pytest.raises(ConfigError, match=match):
        placement.plan(*args, cores=16, visible=2)


def test_no_visible_gpu_is_refused_not_run_on_the_cpu():
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        placement.plan(None, None, "0", None, visible=0)


def test_under_an_outer_cuda_visible_devices_the_indices_count_its_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert placement.plan(None, None, "0,2", None, cores=4, visible=3).gpus == ("3", "7")


def test_each_run_sees_one_gpu_gets_device_cuda_and_no_gpu_holds_more_than_its_share(
    tmp_path, monkeypatch
):
    """Eight stand-in runs on 2 GPUs x 2: each child's environment names one GPU and its
    threads, its command line asks for CUDA, and at no time do three share a GPU."""
    started, lock = [], threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    class FakeRun:
        def __init__(self, cmd, env, **kwargs):
            gpu = env["CUDA_VISIBLE_DEVICES"]
            with lock:
                started.append((cmd, env["OMP_NUM_THREADS"], gpu))
                running[gpu] += 1
                peak[gpu] = max(peak[gpu], running[gpu])
            self.gpu = gpu

        def wait(self):
            time.sleep(0.05)
            with lock:
                running[self.gpu] -= 1
            return 0

    stand_in(monkeypatch, FakeRun)
    runs = [(tmp_path / f"run{i}", [f"seed={i}"]) for i in range(8)]
    where = placement.plan(None, None, "0,1", 2, cores=8, visible=2)
    assert runner.run_all(runs, where) == 0
    assert len(started) == 8
    assert all("device=cuda" in cmd and threads == "2" for cmd, threads, _ in started)
    assert sorted(Counter(gpu for *_, gpu in started).values()) == [4, 4]
    assert max(peak.values()) <= 2 and set(peak) == {"0", "1"}


def test_cpu_runs_get_no_gpu_and_no_device_override(tmp_path, monkeypatch):
    seen = []

    class FakeRun:
        def __init__(self, cmd, env, **kwargs):
            seen.append((cmd, env.get("CUDA_VISIBLE_DEVICES", "unset"), env["OMP_NUM_THREADS"]))

        def wait(self):
            return 0

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    stand_in(monkeypatch, FakeRun)
    runner.run_all([(tmp_path / "a", ["seed=0"])], placement.plan(1, None, cores=2))
    ((cmd, gpu, threads),) = seen
    assert gpu == "unset" and threads == "2" and not any(a.startswith("device=") for a in cmd)


@pytest.mark.parametrize(
    "command",
    [
        ["reproduce", "svrg", "--profile", "quick", "--dry-run", "--gpus", "0,0"],
        ["cv", "model=lenet5", "--grid", "seed=0,1", "--dry-run", "--jobs-per-gpu", "2"],
    ],
)
def test_the_commands_take_the_placement_options(tmp_path, command):
    result = subprocess.run(
        [sys.executable, "-m", "trainrepro", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(("error: --gpus=0,0: ", "error: --jobs-per-gpu=2: needs --gpus"))
    assert list(tmp_path.iterdir()) == []

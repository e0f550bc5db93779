"""Hydra's launcher plugins (the `launchers` extra): a parallel local sweep with joblib, and the
example SLURM config composing (submitting needs a cluster)."""

from __future__ import annotations

import json

import pytest
from support import TINY, cli

RUN = [o for o in TINY if not o.startswith("epochs")] + ["epochs=1"]


def test_joblib_sweep_runs_its_jobs_in_parallel_processes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *RUN,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"


def test_slurm_example_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = cli(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout
    assert "signal_delay_s: 120" in result.stdout

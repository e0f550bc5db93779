"""``deterministic=true``: torch's deterministic switches for the run, CUBLAS_WORKSPACE_CONFIG
set when unset and refused when it would leave cuBLAS non-deterministic, the switches in
summary.json, and runs that repeat. On CUDA, ``deterministic=false`` autotunes cuDNN."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from support import REPO, make_cfg, metrics_without_timings

from trainrepro.engine.build import CUBLAS_ENV, apply_determinism, build_run, check_top_level
from trainrepro.engine.checkpoint import check_same_config
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError

RUN = (
    "model=lenet5",
    "dataset=synthetic",
    "dataset.num_train=256",
    "dataset.num_test=64",
    "dataset.image_size=16",
    "schedule=constant",
    "batch_size=32",
    "eval_batch_size=64",
    "epochs=2",
    "device=cpu",
    "progress=false",
)


@pytest.fixture(autouse=True)
def torch_switches(monkeypatch):
    """Each test starts without the variable and leaves torch's process-wide switches as it
    found them (apply_determinism sets them for the whole process)."""
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def switches() -> dict[str, object]:
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get(CUBLAS_ENV),
    }


def test_the_default_is_false_and_documented():
    assert make_cfg(*RUN).deterministic is False
    text = (REPO / "conf" / "config.yaml").read_text()
    assert "deterministic: false     # true: deterministic kernels" in text


def test_a_deterministic_run_sets_the_switches_and_records_them(tmp_path):
    summary = train(make_cfg(*RUN, "epochs=1", "deterministic=true"), tmp_path)
    expected = {
        "deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": ":4096:8",  # set by the run: it was unset
    }
    assert switches() == expected
    assert json.loads((tmp_path / "summary.json").read_text())["determinism"] == expected
    assert summary["determinism"] == expected


def test_a_later_run_in_the_process_resets_them():
    build_run(make_cfg(*RUN, "deterministic=true"))
    assert torch.are_deterministic_algorithms_enabled()
    build_run(make_cfg(*RUN))
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark  # autotuning is for CUDA only


def test_cuda_without_determinism_autotunes():
    apply_determinism(False, torch.device("cuda"))  # sets flags only: runs without a GPU
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    apply_determinism(True, torch.device("cuda"))
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ[CUBLAS_ENV] == ":4096:8"


@pytest.mark.parametrize("value", [":4096:8", ":16:8"])  # NVIDIA's two deterministic settings
def test_a_deterministic_workspace_setting_is_kept(monkeypatch, value):
    monkeypatch.setenv(CUBLAS_ENV, value)
    check_top_level(make_cfg(*RUN, "deterministic=true"))
    apply_determinism(True, torch.device("cpu"))
    assert os.environ[CUBLAS_ENV] == value


def test_another_workspace_setting_is_refused_only_when_deterministic(monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":0:0")
    check_top_level(make_cfg(*RUN))  # deterministic=false: cuBLAS may do as it likes
    with pytest.raises(ConfigError, match=rf"^{CUBLAS_ENV}=:0:0: deterministic=true needs"):
        check_top_level(make_cfg(*RUN, "deterministic=true"))


def test_the_cli_refuses_it_in_one_line_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    args = [*RUN, "deterministic=true", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(
        [sys.executable, "-m", "trainrepro", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, CUBLAS_ENV: ":0:0"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {CUBLAS_ENV}=:0:0: deterministic=true needs :4096:8 or :16:8 (or unset: we set it)"
    ]
    assert not run_dir.exists()


def test_a_value_other_than_a_boolean_is_refused():
    with pytest.raises(ConfigError, match=r"^deterministic=maybe: must be true or false"):
        check_top_level(make_cfg(*RUN, "deterministic=maybe"))


def test_two_deterministic_runs_write_the_same_metrics(tmp_path):
    first = train(make_cfg(*RUN, "deterministic=true"), tmp_path / "a")
    second = train(make_cfg(*RUN, "deterministic=true"), tmp_path / "b")
    assert first["status"] == second["status"] == "completed"
    a, b = metrics_without_timings(tmp_path / "a"), metrics_without_timings(tmp_path / "b")
    assert len(a) == 2
    assert a.equals(b), (a, b)


def test_checkpoints_from_before_the_key_resume_only_as_false():
    config = OmegaConf.to_container(make_cfg(*RUN), resolve=True)
    saved = {k: v for k, v in config.items() if k != "deterministic"}
    check_same_config(saved, config)
    with pytest.raises(ConfigError, match=r"^deterministic=True: differs"):
        check_same_config(saved, {**config, "deterministic": True})

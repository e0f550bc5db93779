"""The CUDA paths a CPU cannot show (``pytest -m cuda``; skipped without a GPU): with
``deterministic=true`` a rerun and a SIGTERM + resume equal the uninterrupted run on every
non-timing column, in fp32 and in bf16 + channels_last; fp16's GradScaler state survives a
resume; SyncBN trains under torchrun on two GPUs. Each case also runs on the CPU, so the test
itself is exercised on every machine (the CPU is deterministic without the switch)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
from support import REPO, TINY, cli, metrics_without_timings

HAS_CUDA = torch.cuda.is_available()
NEEDS_GPU = pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
RUN = (*[o for o in TINY if not o.startswith("epochs")], "epochs=2", "model.dropout=0.3")


def on(device: str, *precision: str):
    marks = [pytest.mark.cuda, NEEDS_GPU] if device == "cuda" else []
    return pytest.param(device, precision, marks=marks, id="-".join([device, *precision]))


CASES = [
    on("cpu"),
    on("cuda"),
    on("cuda", "precision=bf16", "channels_last=true"),
]


@pytest.fixture(autouse=True)
def tests_on_pythonpath(monkeypatch):
    """The command line finds signal_callback.py (the test-only callback) on its path."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), *paths]))


def run(tmp_path, name: str, *overrides: str) -> tuple[int, pd.DataFrame | None, dict]:
    run_dir = tmp_path / name
    result = cli(*RUN, *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    metrics = metrics_without_timings(run_dir) if (run_dir / "metrics.csv").is_file() else None
    assert result.returncode in (0, 143), result.stderr
    return result.returncode, metrics, summary


KILL_AT_11 = (
    "+callbacks.kill._target_=signal_callback.signal_at",
    "+callbacks.kill.update=11",
)


@pytest.mark.parametrize(("device", "precision"), CASES)
def test_deterministic_rerun_and_resume_equal_the_uninterrupted_run(tmp_path, device, precision):
    args = (f"device={device}", "deterministic=true", *precision)
    _, first, summary = run(tmp_path, "first", *args)
    assert summary["status"] == "completed" and summary["determinism"]["deterministic_algorithms"]
    _, again, _ = run(tmp_path, "again", *args)
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    code, _, stopped = run(tmp_path, "resumed", *args, *KILL_AT_11)
    assert code == 143 and stopped["position"]["updates"] == 11
    _, resumed, _ = run(tmp_path, "resumed", *args, *KILL_AT_11, "resume=true")
    pd.testing.assert_frame_equal(resumed, first, check_exact=True)


@pytest.mark.cuda
@NEEDS_GPU
def test_fp16_scaler_state_survives_a_resume(tmp_path):
    """The loss scale is state: a resume that lost it would take other steps after a skip."""
    args = ("device=cuda", "deterministic=true", "precision=fp16")
    _, first, _ = run(tmp_path, "first", *args)
    _, _, _ = run(tmp_path, "resumed", *args, *KILL_AT_11)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 0
    _, resumed, _ = run(tmp_path, "resumed", *args, *KILL_AT_11, "resume=true")
    pd.testing.assert_frame_equal(resumed, first, check_exact=True)


@pytest.mark.cuda
@NEEDS_GPU
def test_the_default_cuda_run_autotunes_and_says_it_is_not_bit_exact(tmp_path):
    _, metrics, summary = run(tmp_path, "fast", "device=cuda")
    assert summary["status"] == "completed" and len(metrics) == 2
    assert summary["determinism"]["cudnn_benchmark"] is True
    assert summary["determinism"]["deterministic_algorithms"] is False


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_syncbn_under_torchrun_on_two_gpus(tmp_path):
    import subprocess
    import sys

    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "trainrepro", *RUN, "device=cuda", "normalization=bn",
         "normalization.sync=true", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert "SyncBatchNorm" in result.stdout + result.stderr or summary["epochs_completed"] == 2

"""torchrun on CPU (gloo, 2 processes): 2 ranks with global batch B take the same steps as one
process with batch B (with a norm without batch statistics, to float tolerance); per-rank batch
norm differs from that, as it should; only rank 0 writes the run directory; a checkpoint made by
one process mid-epoch resumes on two ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from support import REPO, TINY

from trainrepro.engine.checkpoint import CHECKPOINT_NAME

RUN = (*[o for o in TINY if not o.startswith("epochs")], "epochs=2", "model.dropout=0.0")


def run(tmp_path, name: str, nproc: int, *overrides: str) -> tuple[dict, pd.DataFrame]:
    run_dir = tmp_path / name
    if (run_dir / "summary.json").exists():  # the module's tests share reference runs
        ckpt = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
        return ckpt["model"], pd.read_csv(run_dir / "metrics.csv")
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    cmd = [*launcher, "-m", "trainrepro", *RUN, *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    ckpt = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    return ckpt["model"], pd.read_csv(run_dir / "metrics.csv")


def close(a: dict, b: dict, atol: float = 1e-3) -> bool:
    """Float tolerance: the ranks sum the batch's gradient in another order, and 16 updates
    with momentum amplify that rounding on these weights: measured 4e-5 with a 2-thread
    one-process reference and 3e-4 with a 1-thread one (the conv gradients' own summation order
    differs too). A real mistake is far larger: the one-process run with lr 0.11 instead of 0.1
    ends 3e-2 away."""
    return all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp")


def test_two_ranks_take_the_same_steps_as_one_process(tmp):
    one, m1 = run(tmp, "gn1", 1, "normalization=gn", "normalization.groups=4")
    two, m2 = run(tmp, "gn2", 2, "normalization=gn", "normalization.groups=4")
    assert close(one, two)
    assert list(m1["updates"]) == list(m2["updates"]) and list(m1["samples"]) == list(m2["samples"])
    pd.testing.assert_series_equal(m1["train_loss"], m2["train_loss"], rtol=1e-4)
    assert (m1["test_acc"] - m2["test_acc"]).abs().max() <= 100 / 256  # at most one image
    summary = json.loads((tmp / "gn2" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["ranks"] == 2


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_per_rank_batch_norm_differs_and_sync_batch_norm_follows_the_global_batch(tmp):
    """Per-rank BN normalizes each half on its own, so it leaves one process's trajectory;
    normalization.sync=true normalizes with the global batch's statistics and stays with it, to
    rounding: batch norm amplifies float rounding far more than GroupNorm does (one process at
    1 and at 2 threads ends 0.03 apart on these running variances), so the check is relative."""
    one, _ = run(tmp, "bn1", 1, "normalization=bn")
    per_rank, _ = run(tmp, "bn2", 2, "normalization=bn")
    synced, _ = run(tmp, "bn2sync", 2, "normalization=bn", "normalization.sync=true")
    assert not close(one, per_rank)
    assert max_diff(one, synced) < max_diff(one, per_rank) / 10


def test_global_batch_must_split_evenly(tmp):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainrepro",
        *RUN,
        "batch_size=63",
        f"hydra.run.dir={tmp / 'odd'}",
    ]
    result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "error: batch_size=63: must split evenly over 2 ranks" in result.stderr
    assert not (tmp / "odd").exists()


def test_a_mid_epoch_checkpoint_of_one_process_resumes_on_two_ranks(tmp):
    """SIGTERM at update 11 of 16 (epoch 1, batch 3) in one process; the run resumes under
    torchrun with 2 ranks and ends where the uninterrupted one-process run ends."""
    one, m1 = run(tmp, "gn1", 1, "normalization=gn", "normalization.groups=4")
    run_dir = tmp / "gn_moved"
    args = [
        "-m", "trainrepro", *RUN, "normalization=gn", "normalization.groups=4",
        "+callbacks.kill._target_=signal_callback.signal_at", "+callbacks.kill.update=11",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    path = [str(REPO / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    first = subprocess.run([sys.executable, *args], cwd=tmp, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert first.returncode == 143, first.stderr
    position = json.loads((run_dir / "summary.json").read_text())["position"]
    assert position == {"epoch": 1, "batch": 3, "updates": 11}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    second = subprocess.run([*torchrun, *args, "resume=true"], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["ranks"] == 2
    moved = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    assert close(one, moved)
    m2 = pd.read_csv(run_dir / "metrics.csv")
    assert list(m1["updates"]) == list(m2["updates"])
    pd.testing.assert_series_equal(m1["train_loss"], m2["train_loss"], rtol=1e-4)

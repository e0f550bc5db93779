"""SIGTERM and SIGINT through the command line: finish the update, checkpoint, exit 143 / 130,
and resume to exactly the uninterrupted run; a second signal stops at once and keeps the last
complete checkpoint."""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest
import torch
from support import REPO, TINY, cli, metrics_without_timings, tiny_cfg

import trainrepro.engine.records as records
from trainrepro.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainrepro.engine.preemption import Preempted
from trainrepro.engine.train import train

RUN = (*[o for o in TINY if not o.startswith("epochs")], "epochs=2", "model.dropout=0.3")


def signal_overrides(update: int, name: str, times: int = 1) -> list[str]:
    return [
        "+callbacks.kill._target_=signal_callback.signal_at",
        f"+callbacks.kill.update={update}",
        f"+callbacks.kill.signal_name={name}",
        f"+callbacks.kill.times={times}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run_dir = tmp_path_factory.mktemp("full")
    assert train(tiny_cfg(*RUN), run_dir)["status"] == "completed"
    return metrics_without_timings(run_dir)


@pytest.fixture(autouse=True)
def tests_on_pythonpath(monkeypatch):
    """The command line finds signal_callback.py (the test-only callback) on its path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), *_pythonpath()]))


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, uninterrupted, name, code):
    run_dir = tmp_path / "run"
    args = [*RUN, *signal_overrides(11, name), f"hydra.run.dir={run_dir}"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == code, first.stderr
    assert f"{name}: finishing this update" in first.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name
    # The update in flight when the signal came (the 11th) was finished, then saved.
    assert summary["position"] == {"epoch": 1, "batch": 3, "updates": 11}
    second = cli(*args, "resume=true", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    pd.testing.assert_frame_equal(metrics_without_timings(run_dir), uninterrupted, check_exact=True)


def test_second_signal_exits_at_once_keeping_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [*RUN, *signal_overrides(11, "SIGTERM", times=2), f"hydra.run.dir={run_dir}"]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 143, result.stderr
    assert "received twice" in result.stderr and "Traceback" not in result.stderr
    progress = load_checkpoint(run_dir / CHECKPOINT_NAME)["progress"]
    assert (progress["epoch"], progress["batch"]) == (1, 0)  # epoch 1's end, intact
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_signal_during_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    """A second signal while the checkpoint is being written: the temporary file goes, the
    previous checkpoint stays whole."""
    train(tiny_cfg(*RUN), tmp_path, stop_after_epoch=1)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    fsync = os.fsync

    def preempted_while_checkpointing(fd: int) -> None:
        if f".{CHECKPOINT_NAME}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise Preempted(signal.SIGTERM)
        fsync(fd)

    monkeypatch.setattr(records.os, "fsync", preempted_while_checkpointing)
    with pytest.raises(Preempted):
        train(tiny_cfg(*RUN, "resume=true", "checkpoint_every=2"), tmp_path)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    torch.manual_seed(1)
    assert train(tiny_cfg(*RUN, "resume=true"), tmp_path)["status"] == "completed"

"""Resume continues a run bit for bit on CPU, from an epoch boundary or from inside an epoch.

Each comparison has a negative control that resumes with a deliberately wrong learning rate
(or without some piece of state) and must differ, so the equality cannot hold by accident.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from support import metrics_without_timings, tiny_cfg

import trainrepro.engine.train as train_module
from trainrepro.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError

# Dropout and augmentation make the global RNG and the data order matter; the step schedule
# makes the lr depend on the epoch; momentum makes the optimizer state matter.
RESUME_RUN = (
    "epochs=3",
    "model.dropout=0.3",
    "schedule=step",
    "schedule.milestones=[1.5]",
)
UPDATES_PER_EPOCH = 512 // 64
# Where the first process stops: at the end of epoch 1, or after the 3rd update of epoch 2
# (so the milestone at 1.5 epochs falls in the resumed part).
STOPS = {"epoch boundary": {"stop_after_epoch": 1}, "mid-epoch": {"stop_after_update": 11}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run_dir = tmp_path_factory.mktemp("full")
    summary = train(tiny_cfg(*RESUME_RUN), run_dir)
    assert summary["status"] == "completed"
    return metrics_without_timings(run_dir)


def interrupted_then_resumed(run_dir, stop: dict, *resume_overrides: str) -> pd.DataFrame:
    first = train(tiny_cfg(*RESUME_RUN), run_dir, **stop)
    assert first["status"] == "interrupted"
    torch.manual_seed(12345)  # a new process would start from some other RNG state
    second = train(tiny_cfg(*RESUME_RUN, "resume=true", *resume_overrides), run_dir)
    assert second["status"] == "completed" and second["epochs_completed"] == 3
    return metrics_without_timings(run_dir)


@pytest.mark.parametrize("stop", STOPS.values(), ids=STOPS.keys())
def test_resume_matches_uninterrupted_run(tmp_path, uninterrupted, stop):
    resumed = interrupted_then_resumed(tmp_path, stop)
    assert len(resumed) == 3
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)


def test_mid_epoch_checkpoint_records_the_position(tmp_path):
    summary = train(tiny_cfg(*RESUME_RUN), tmp_path, stop_after_update=11)
    assert summary["position"] == {"epoch": 1, "batch": 3, "updates": 11}
    assert summary["epochs_completed"] == 1
    progress = load_checkpoint(tmp_path / CHECKPOINT_NAME)["progress"]
    assert (progress["epoch"], progress["batch"], progress["updates"]) == (1, 3, 11)
    assert progress["seen"] == 3 * 64 and progress["batch_size"] == 64
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1  # only the finished epoch


@pytest.mark.parametrize("stop", STOPS.values(), ids=STOPS.keys())
def test_negative_control_wrong_lr_after_resume_differs(tmp_path, uninterrupted, monkeypatch, stop):
    first = train(tiny_cfg(*RESUME_RUN), tmp_path, **stop)
    assert first["status"] == "interrupted"
    set_lr = train_module.set_lr
    monkeypatch.setattr(train_module, "set_lr", lambda opt, lr: set_lr(opt, lr * 1.5))
    train(tiny_cfg(*RESUME_RUN, "resume=true"), tmp_path)
    resumed = metrics_without_timings(tmp_path)
    pd.testing.assert_frame_equal(resumed.iloc[:1], uninterrupted.iloc[:1], check_exact=True)
    assert (resumed["train_loss"].iloc[1:] != uninterrupted["train_loss"].iloc[1:]).all()


@pytest.mark.parametrize("skipped", ["restore_optimizer", "restore_rng"])
def test_negative_control_resume_without_state_differs(
    tmp_path, uninterrupted, monkeypatch, skipped
):
    monkeypatch.setattr(train_module, skipped, lambda *args, **kwargs: None)
    resumed = interrupted_then_resumed(tmp_path, STOPS["epoch boundary"])
    # The first epoch ran before the interruption, so it still agrees; the rest must not.
    pd.testing.assert_frame_equal(resumed.iloc[:1], uninterrupted.iloc[:1], check_exact=True)
    assert not resumed.iloc[1:].equals(uninterrupted.iloc[1:])
    assert (resumed["test_loss"].iloc[1:] != uninterrupted["test_loss"].iloc[1:]).all()


def test_checkpoint_every_survives_a_crash_mid_epoch(tmp_path, uninterrupted, monkeypatch):
    """A crash (not a signal) loses only the updates since the last periodic checkpoint."""
    update = train_module._update
    calls = {"n": 0}

    def crash_at_update_13(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("simulated crash")
        return update(*args, **kwargs)

    monkeypatch.setattr(train_module, "_update", crash_at_update_13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_cfg(*RESUME_RUN, "checkpoint_every=5"), tmp_path)
    progress = load_checkpoint(tmp_path / CHECKPOINT_NAME)["progress"]
    assert (progress["epoch"], progress["batch"], progress["updates"]) == (1, 2, 10)
    monkeypatch.setattr(train_module, "_update", update)
    torch.manual_seed(12345)
    train(tiny_cfg(*RESUME_RUN, "checkpoint_every=5", "resume=true"), tmp_path)
    pd.testing.assert_frame_equal(
        metrics_without_timings(tmp_path), uninterrupted, check_exact=True
    )


def test_checkpoint_every_may_change_on_resume(tmp_path):
    train(tiny_cfg(*RESUME_RUN, "checkpoint_every=3"), tmp_path, stop_after_update=4)
    summary = train(tiny_cfg(*RESUME_RUN, "resume=true"), tmp_path)
    assert summary["status"] == "completed"


@pytest.mark.parametrize("value", [0, -3, "often"])
def test_checkpoint_every_must_be_positive(tmp_path, value):
    with pytest.raises(ConfigError, match="checkpoint_every"):
        train(tiny_cfg(f"checkpoint_every={value}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_changed_config(tmp_path):
    train(tiny_cfg(*RESUME_RUN), tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match="optimizer"):
        train(tiny_cfg(*RESUME_RUN, "resume=true", "optimizer.lr=0.3"), tmp_path)


def test_new_run_refuses_existing_run_dir(tmp_path):
    train(tiny_cfg(*RESUME_RUN), tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match="resume"):
        train(tiny_cfg(*RESUME_RUN), tmp_path)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="resume=True"):
        train(tiny_cfg("resume=true"), tmp_path)
    assert not any(tmp_path.iterdir())

"""Resume continues a run bit for bit on CPU; the negative controls show the test can fail."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from support import metrics_without_timings, tiny_cfg

import trainrepro.train as train_module
from trainrepro.train import train

# Dropout and augmentation make the global RNG and the data order matter; the step schedule
# makes the lr depend on the epoch; momentum makes the optimizer state matter.
RESUME_RUN = (
    "epochs=3",
    "model.dropout=0.3",
    "schedule=step",
    "schedule.milestones=[1.5]",
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run_dir = tmp_path_factory.mktemp("full")
    summary = train(tiny_cfg(*RESUME_RUN), run_dir)
    assert summary["status"] == "completed"
    return metrics_without_timings(run_dir)


def interrupted_then_resumed(run_dir) -> pd.DataFrame:
    first = train(tiny_cfg(*RESUME_RUN), run_dir, stop_after_epoch=1)
    assert first["status"] == "interrupted" and first["epochs_completed"] == 1
    torch.manual_seed(12345)  # a new process would start from some other RNG state
    second = train(tiny_cfg(*RESUME_RUN, "resume=true"), run_dir)
    assert second["status"] == "completed" and second["epochs_completed"] == 3
    return metrics_without_timings(run_dir)


def test_resume_matches_uninterrupted_run(tmp_path, uninterrupted):
    resumed = interrupted_then_resumed(tmp_path)
    assert len(resumed) == 3
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)


@pytest.mark.parametrize("skipped", ["restore_optimizer", "restore_rng"])
def test_negative_control_resume_without_state_differs(
    tmp_path, uninterrupted, monkeypatch, skipped
):
    monkeypatch.setattr(train_module, skipped, lambda *args, **kwargs: None)
    resumed = interrupted_then_resumed(tmp_path)
    # The first epoch ran before the interruption, so it still agrees; the rest must not.
    pd.testing.assert_frame_equal(resumed.iloc[:1], uninterrupted.iloc[:1], check_exact=True)
    assert not resumed.iloc[1:].equals(uninterrupted.iloc[1:])
    assert (resumed["test_loss"].iloc[1:] != uninterrupted["test_loss"].iloc[1:]).all()


def test_resume_refuses_changed_config(tmp_path):
    from trainrepro.errors import ConfigError

    train(tiny_cfg(*RESUME_RUN), tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match="optimizer"):
        train(tiny_cfg(*RESUME_RUN, "resume=true", "optimizer.lr=0.3"), tmp_path)


def test_new_run_refuses_existing_run_dir(tmp_path):
    from trainrepro.errors import ConfigError

    train(tiny_cfg(*RESUME_RUN), tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match="resume"):
        train(tiny_cfg(*RESUME_RUN), tmp_path)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    from trainrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="resume=True"):
        train(tiny_cfg("resume=true"), tmp_path)
    assert not any(tmp_path.iterdir())

"""Interrupt mid-epoch, resume, compare: for every optimizer, schedule, normalization and
callback option in ``conf/`` (read from the folders, so a new option is covered without editing
this file). On CPU the resumed metrics.csv must equal the uninterrupted run's exactly."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from support import SMALL, metrics_without_timings, options, tiny_cfg

from trainrepro.engine.train import train

GROUPS = ("optimizer", "schedule", "normalization", "callbacks")
# 256 images at batch 32: 8 updates an epoch; the interruption falls in epoch 2's middle.
RUN = ("dataset.num_train=256", "batch_size=32", "epochs=2", "model.dropout=0.2")
STOP_AFTER_UPDATE = 11
CASES = [(g, o) for g in GROUPS for o in options(g)]


def option_overrides(group: str, option: str) -> tuple[str, ...]:
    if group == "callbacks":
        return (f"+callbacks={option}", *SMALL.get((group, option), ()))
    return (f"{group}={option}", *SMALL.get((group, option), ()))


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_interrupted_and_resumed_run_equals_uninterrupted(group, option, tmp_path):
    overrides = (*RUN, *option_overrides(group, option))
    assert train(tiny_cfg(*overrides), tmp_path / "full")["status"] == "completed"
    first = train(tiny_cfg(*overrides), tmp_path / "cut", stop_after_update=STOP_AFTER_UPDATE)
    assert first["status"] == "interrupted"
    assert first["position"]["batch"] == STOP_AFTER_UPDATE - 8
    torch.manual_seed(987)  # a new process starts from another RNG state
    assert train(tiny_cfg(*overrides, "resume=true"), tmp_path / "cut")["status"] == "completed"
    pd.testing.assert_frame_equal(
        metrics_without_timings(tmp_path / "cut"),
        metrics_without_timings(tmp_path / "full"),
        check_exact=True,
    )

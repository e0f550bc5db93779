"""Gradient accumulation in the trainer: a batch above ``max_micro_batch`` is one update.

With ghost batch norm and micro-batches of whole ghost batches, an accumulated update equals
the whole-batch update to float rounding; with plain BN it does not (the negative control),
because BN's statistics then span a micro-batch instead of the batch.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from support import tiny_cfg

from trainrepro.engine.build import build_run
from trainrepro.engine.train import _update, train

GHOST = ("normalization=ghost_bn", "normalization.ghost_batch_size=16")


def _state_after_one_update(micro: int | None, *overrides: str) -> dict[str, torch.Tensor]:
    run = build_run(tiny_cfg(*overrides))
    run.model.train()
    x, y = next(iter(run.train_loader.batches(0, 64)))
    _update(run, x, y, micro)
    return {k: v.detach().clone().double() for k, v in run.model.state_dict().items()}


def _max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(
        ((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-3)).item()
        for k in a
        if a[k].is_floating_point()
    )


@pytest.mark.parametrize("micro", [16, 32, 48])
def test_accumulated_ghost_batches_give_the_whole_batch_update(micro):
    whole = _state_after_one_update(None, *GHOST)
    accumulated = _state_after_one_update(micro, *GHOST)
    # Weights after the step and the running statistics, all within float rounding.
    assert _max_relative_difference(whole, accumulated) < 1e-5


def test_negative_control_plain_batch_norm_differs():
    whole = _state_after_one_update(None, "normalization=bn")
    accumulated = _state_after_one_update(16, "normalization=bn")
    assert _max_relative_difference(whole, accumulated) > 1e-3


def _metrics(tmp_path, name: str, *overrides: str) -> pd.DataFrame:
    run_dir = tmp_path / name
    train(tiny_cfg(*overrides), run_dir)
    return pd.read_csv(run_dir / "metrics.csv")


def test_trainer_counts_one_update_per_logical_batch(tmp_path):
    # A small lr keeps float rounding from being amplified across the epoch's 8 updates.
    args = (*GHOST, "epochs=1", "optimizer.lr=0.01")
    whole = _metrics(tmp_path, "whole", *args)
    accumulated = _metrics(tmp_path, "accumulated", *args, "max_micro_batch=32")
    counts = ["updates", "samples", "grad_evals", "batch_size"]
    assert (
        accumulated[counts].values.tolist() == whole[counts].values.tolist() == [[8, 512, 512, 64]]
    )
    losses = ["train_loss", "test_loss"]
    pd.testing.assert_frame_equal(accumulated[losses], whole[losses], rtol=1e-4, atol=0)


def test_micro_batch_larger_than_the_batch_changes_nothing(tmp_path):
    whole = _metrics(tmp_path, "whole", "epochs=1")
    same = _metrics(tmp_path, "same", "epochs=1", "max_micro_batch=1000")
    columns = ["updates", "train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(same[columns], whole[columns], rtol=0, atol=0)

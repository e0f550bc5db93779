"""Batch size 1: batch-statistics norms (bn, ghost_bn) are refused with one ConfigError line
before training; gn, ln, in and bgn train at batch 1 and 2."""

from __future__ import annotations

import math

import pytest
from support import TINY_DATA, TINY_RUN, make_cfg, tiny_cfg
from torch import nn

from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.norms.batch_checks import check_batch, check_ghost_batch, uses_batch_statistics
from trainrepro.norms.factory import batch_norm, create_norm, ghost_batch_norm

SMALL_RUN = ("dataset.num_train=8", "dataset.num_test=8", "epochs=1", "eval_batch_size=8")


def test_check_batch_refuses_one_example_for_batch_statistics() -> None:
    assert check_ghost_batch is check_batch
    with pytest.raises(ConfigError, match=r"^batch_size=1: batch-statistics normalization"):
        check_batch(batch_norm(), 1)
    check_batch(batch_norm(), 2)
    with pytest.raises(ConfigError, match=r"^max_micro_batch=4: splits the batch size 9 into"):
        check_batch(batch_norm(), 9, max_micro_batch=4)  # 4 + 4 + 1
    check_batch(batch_norm(), 10, max_micro_batch=4)  # 4 + 4 + 2
    with pytest.raises(ConfigError, match=r"^batch_size=1"):
        check_batch(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), 1)
    with pytest.raises(ConfigError, match=r"^normalization\.ghost_batch_size=1: a ghost batch"):
        ghost_batch_norm(ghost_batch_size=1)


@pytest.mark.parametrize("name", ["gn", "ln", "in", "bgn", "none"])
def test_per_example_norms_accept_batch_one(name: str) -> None:
    factory = create_norm(name)
    assert not uses_batch_statistics(factory)
    check_batch(factory, 1)
    check_batch(factory, 3, max_micro_batch=1)


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=wrn", "model.depth=10", "model.width=1", "normalization=bn"),
        ("model=wrn", "model.depth=10", "model.width=1", "normalization=bn_ws"),
        ("model=lenet5", "normalization=ghost_bn", "normalization.ghost_batch_size=2"),
    ],
)
def test_bn_at_batch_one_fails_before_training(overrides: tuple[str, ...], tmp_path) -> None:
    cfg = make_cfg(*TINY_DATA, *TINY_RUN, *SMALL_RUN, *overrides, "batch_size=1")
    with pytest.raises(ConfigError, match=r"^batch_size=1: batch-statistics normalization"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_schedule_reaching_batch_one_fails_before_training(tmp_path) -> None:
    cfg = tiny_cfg(
        *SMALL_RUN,
        "normalization=bn",
        "batch_size=2",
        "max_micro_batch=1",
    )
    with pytest.raises(ConfigError, match=r"^max_micro_batch=1: splits the batch size 2"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("norm", ["gn", "ln", "in", "bgn", "gn_ws"])
def test_per_example_norms_train_at_batch_one_and_two(norm: str, batch_size: int, tmp_path) -> None:
    cfg = tiny_cfg(*SMALL_RUN, f"normalization={norm}", f"batch_size={batch_size}")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["final"]["updates"] == 8 // batch_size
    assert math.isfinite(summary["final"]["train_loss"])

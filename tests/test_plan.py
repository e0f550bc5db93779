"""The schedule preview: ``trainrepro plan ...`` / ``+plan=true`` prints what a run would use,
counts updates as the trainer does, and trains and writes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from support import TINY, cli, tiny_cfg

from trainrepro.config import instantiate
from trainrepro.engine.build import epoch_batch_sizes, make_schedule
from trainrepro.engine.plan import build_plan, format_plan
from trainrepro.engine.train import train
from trainrepro.schedules.noise import noise_scale

# 512 training images; the batch grows 64 -> 128 -> 256 at epochs 1 and 2 (factor 0.5).
GROWING = (
    "schedule=step",
    "schedule.milestones=[1,2]",
    "schedule.factor=0.5",
    "schedule.mode=increase_batch",
    "epochs=3",
)


def test_plan_rows_follow_the_schedule():
    rows, n_train = build_plan(tiny_cfg(*GROWING))
    assert n_train == 512
    assert [r["batch_size"] for r in rows] == [64, 128, 256]
    assert [r["updates_in_epoch"] for r in rows] == [8, 4, 2]
    assert [r["updates"] for r in rows] == [8, 12, 14]
    assert all(r["lr"] == pytest.approx(0.1) for r in rows)
    assert rows[1]["noise_scale"] == pytest.approx(noise_scale(0.1, 0.9, 512, 128))
    text = format_plan(rows, n_train)
    assert text.splitlines()[-1].startswith("total: 3 epochs, 14 updates, 1536 samples")


def test_plan_equals_what_the_trainer_logs(tmp_path):
    cfg = tiny_cfg(*GROWING)
    rows, _ = build_plan(cfg)
    train(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    for column in ("batch_size", "updates", "samples"):
        assert metrics[column].tolist() == [r[column] for r in rows]
    assert metrics["noise_scale"].tolist() == pytest.approx([r["noise_scale"] for r in rows])


def test_epoch_batch_sizes_matches_the_plan():
    cfg = tiny_cfg(*GROWING)
    optimizer = instantiate("optimizer", cfg.optimizer, __import__("torch").nn.Linear(1, 1))
    assert epoch_batch_sizes(make_schedule(cfg, optimizer), 3, 512) == [64, 128, 256]


@pytest.mark.parametrize("form", ["subcommand", "override"])
def test_cli_plan_prints_and_writes_nothing(tmp_path, form):
    args = [*TINY, *GROWING, f"hydra.run.dir={tmp_path / 'run'}"]
    args = ["plan", *args] if form == "subcommand" else [*args, "+plan=true"]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["epoch", "lr", "batch"]
    assert len(lines) == 1 + 3 + 2
    assert lines[-2].startswith("total: 3 epochs, 14 updates")
    assert lines[-1] == "evaluation after each epoch: all 256 test images"
    assert list(tmp_path.iterdir()) == []


def test_cli_plan_rejects_a_bad_config_like_a_run(tmp_path):
    result = cli("plan", *TINY, "normalization=ghost_bn", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: normalization.ghost_batch_size=128: does not divide the batch size 64"
    )
    assert list(tmp_path.iterdir()) == []

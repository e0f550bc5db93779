"""Snapshot ensembles (Loshchilov & Hutter 2017, SGDR; Huang et al. 2017): ``+callbacks=snapshots``
saves the weights at the end of each lr cycle, ``trainrepro ensemble`` scores them alone and as
the mean of the softmax outputs of the last m.

The snapshot epochs are compared with hand-written restart epochs, the files with the model the
run ended with, a resumed run's snapshots with an uninterrupted run's (bit for bit on CPU), and
the ensemble with probabilities averaged here by hand; bad inputs fail on one line.
"""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import torch
from support import make_cfg

import trainrepro.engine.train as train_module
from trainrepro.analysis.ensemble import eval_config, evaluate_snapshots, load_config
from trainrepro.analysis.ensemble import main as ensemble_main
from trainrepro.engine.build import build_run
from trainrepro.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.instruments.snapshots import snapshot_epochs, snapshots
from trainrepro.schedules import create_schedule

# 128 images in batches of 32: 4 updates an epoch. LeNet-5 with BN, so buffers travel too.
SMALL = (
    "dataset=synthetic",
    "dataset.num_train=128",
    "dataset.num_test=64",
    "dataset.image_size=16",
    "model=lenet5",
    "batch_size=32",
    "eval_batch_size=64",
    "device=cpu",
    "progress=false",
)
# SGDR with T_0 = 1, T_mult = 2 over 7 epochs: cycles of 1, 2 and 4 epochs end at 1, 3 and 7.
SGDR = ("schedule=sgdr", "schedule.period=1", "schedule.period_mult=2", "epochs=7")
SNAP = (*SMALL, *SGDR, "+callbacks=snapshots")
RESTARTS = [1, 3, 7]
FILES = {"epoch_0001.pt", "epoch_0003.pt", "epoch_0007.pt"}


def cfg(*extra: str):
    return make_cfg(*SNAP, *extra)


def snapshot_files(run_dir) -> set[str]:
    return {p.name for p in (run_dir / "snapshots").glob("*.pt")}


def index(run_dir) -> dict:
    return json.loads((run_dir / "snapshots" / "index.json").read_text())


def load(run_dir, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "snapshots" / f"epoch_{epoch:04d}.pt", weights_only=True)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    assert train(cfg(), run_dir)["status"] == "completed"
    return run_dir


# ------------------------------------------------------------------ which epochs
def _schedule(name: str, epochs: int, **keys):
    return create_schedule(name, lr=0.1, batch_size=32, epochs=epochs, **keys)


@pytest.mark.parametrize(
    "name, epochs, keys, ends",
    [
        ("sgdr", 7, {"period": 1.0, "period_mult": 2.0}, [1, 3, 7]),
        ("sgdr", 150, {"period": 10.0, "period_mult": 2.0}, [10, 30, 70, 150]),  # the paper's
        ("sgdr", 100, {"period": 10.0, "period_mult": 2.0}, [10, 30, 70]),  # 150 is past the end
        ("sgdr", 7, {"period": 2.0, "period_mult": 1.0}, [2, 4, 6]),
        ("sgdr", 9, {"period": 2.0, "period_mult": 1.5}, [2, 5]),  # next one at 9.5
        ("cyclic", 10, {"half_period": 2.0}, [4, 8]),
        ("cyclic", 8, {"half_period": 2.0, "warmup_epochs": 1.0}, [4, 8]),  # warmup: same ends
    ],
)
def test_cycle_ends_are_the_restarts_and_troughs(name, epochs, keys, ends):
    schedule = _schedule(name, epochs, **keys)
    assert snapshot_epochs(schedule, epochs, "cycle_ends", []) == ends
    for end in ends:  # the lr is at its lowest at an end, back at its highest right after
        before, after = schedule(end - 1e-6, 0).lr, schedule(end + 1e-6, 0).lr
        low = 0.0 if name == "sgdr" else 0.1 / 4
        assert before == pytest.approx(low, abs=1e-6) and after < 0.1 + 1e-12
        if name == "sgdr":
            assert after == pytest.approx(0.1)


def test_listed_epochs_join_the_cycle_ends_or_replace_them():
    sgdr = _schedule("sgdr", 7, period=1.0, period_mult=2.0)
    assert snapshot_epochs(sgdr, 7, "cycle_ends", [2, 7]) == [1, 2, 3, 7]
    assert snapshot_epochs(sgdr, 7, "epochs", [5]) == [5]
    assert snapshot_epochs(_schedule("cosine", 7), 7, "epochs", [2, 6]) == [2, 6]


# ------------------------------------------------------------------ what is written
def test_snapshots_are_taken_at_the_sgdr_restarts(full_run):
    assert snapshot_files(full_run) == FILES
    entries = index(full_run)["snapshots"]
    assert [e["epoch"] for e in entries] == RESTARTS
    assert [e["updates"] for e in entries] == [4 * e for e in RESTARTS]
    metrics = pd.read_csv(full_run / "metrics.csv").set_index("epoch")
    assert [e["test_acc"] for e in entries] == [metrics.loc[e, "test_acc"] for e in RESTARTS]


def test_snapshots_load_with_weights_only_and_hold_the_model(full_run):
    final = load_checkpoint(full_run / CHECKPOINT_NAME)["model"]
    last = load(full_run, 7)
    assert any(k.endswith("running_mean") for k in last)  # BN buffers are in
    assert_same_tensors(last, final)
    first = load(full_run, 1)  # control: an earlier snapshot is another model
    assert first.keys() == final.keys()
    assert not all(torch.equal(first[k], final[k]) for k in final)


def test_listed_epochs_work_for_any_schedule(tmp_path):
    overrides = ("schedule=cosine", "epochs=3", "callbacks.snapshots.at=epochs")
    train(make_cfg(*SMALL, "+callbacks=snapshots", *overrides, "callbacks.snapshots.epochs=[2]"),
          tmp_path)  # fmt: skip
    assert snapshot_files(tmp_path) == {"epoch_0002.pt"}


def test_resume_at_an_epoch_end_keeps_the_same_snapshots(tmp_path, full_run):
    assert train(cfg(), tmp_path, stop_after_epoch=3)["status"] == "interrupted"
    assert snapshot_files(tmp_path) == {"epoch_0001.pt", "epoch_0003.pt"}
    assert_same_tensors(load(tmp_path, 3), load_checkpoint(tmp_path / CHECKPOINT_NAME)["model"])
    torch.manual_seed(12345)  # a new process would start from another RNG state
    assert train(cfg("resume=true"), tmp_path)["status"] == "completed"
    assert snapshot_files(tmp_path) == FILES
    assert index(tmp_path) == index(full_run)
    for epoch in RESTARTS:
        assert_same_tensors(load(tmp_path, epoch), load(full_run, epoch))


class Crash(Exception):
    pass


def test_a_crash_after_a_snapshot_before_its_checkpoint_leaves_no_duplicate(
    tmp_path, full_run, monkeypatch
):
    save = train_module.save_checkpoint

    def crash_after_epoch_3(path, **kwargs):
        if kwargs["progress"].epoch == 3:
            raise Crash  # the machine dies: the snapshot of epoch 3 is on disk, its checkpoint not
        save(path, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_epoch_3)
    with pytest.raises(Crash):
        train(cfg(), tmp_path)
    assert snapshot_files(tmp_path) == {"epoch_0001.pt", "epoch_0003.pt"}
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    # Resumed from epoch 2's end and stopped again inside epoch 3: the folder and the index
    # hold what the checkpoint knows of, not the orphan of epoch 3.
    assert train(cfg("resume=true"), tmp_path, stop_after_update=9)["status"] == "interrupted"
    assert snapshot_files(tmp_path) == {"epoch_0001.pt"}
    assert [e["epoch"] for e in index(tmp_path)["snapshots"]] == [1]
    assert train(cfg("resume=true"), tmp_path)["status"] == "completed"
    assert [e["epoch"] for e in index(tmp_path)["snapshots"]] == RESTARTS
    assert snapshot_files(tmp_path) == FILES
    for epoch in RESTARTS:
        assert_same_tensors(load(tmp_path, epoch), load(full_run, epoch))


# ------------------------------------------------------------------ the ensembles
def test_ensemble_table_and_files(full_run, capsys):
    assert ensemble_main([str(full_run), "--last", "3"]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(full_run / "ensemble.csv")
    assert table["kind"].tolist() == ["snapshot"] * 3 + ["ensemble"] * 3
    assert table["members"].astype(str).tolist() == ["1", "3", "7", "7", "3 7", "1 3 7"]
    singles = table[table["kind"] == "snapshot"].set_index("members")
    ensembles = table[table["kind"] == "ensemble"].set_index("m")
    # Each snapshot alone scores what the run measured at that epoch.
    for entry in index(full_run)["snapshots"]:
        assert singles.loc[str(entry["epoch"]), "test_acc"] == entry["test_acc"]
        assert singles.loc[str(entry["epoch"]), "test_loss"] == pytest.approx(entry["test_loss"])
    # The ensemble of one is the last snapshot.
    assert ensembles.loc[1, "test_acc"] == singles.loc["7", "test_acc"]
    assert ensembles.loc[1, "test_loss"] == pytest.approx(singles.loc["7", "test_loss"], rel=1e-12)
    report = json.loads((full_run / "ensemble.json").read_text())
    assert [r["test_acc"] for r in report["rows"]] == table["test_acc"].tolist()
    assert report["n_test"] == 64 and "1 3 7" in out


def test_ensemble_probabilities_are_the_mean_of_the_members(full_run):
    config, _ = eval_config(load_config(full_run), None)
    x, y = next(build_run(config).test_loader.batches(0, 64, shuffle=False, drop_last=False))
    model = build_run(config).model.eval()
    probs = []
    for epoch in RESTARTS[1:]:  # the last two, by hand
        model.load_state_dict(load(full_run, epoch))
        with torch.no_grad():
            probs.append(torch.softmax(model(x).double(), dim=1))
    by_hand = (probs[0] + probs[1]) / 2
    rows, log_probs, labels = evaluate_snapshots(
        build_run(config), full_run, index(full_run)["snapshots"], 2, 16
    )
    assert torch.equal(labels, y)
    torch.testing.assert_close(log_probs.exp(), by_hand, rtol=1e-6, atol=1e-9)
    pair = next(r for r in rows if r["kind"] == "ensemble" and r["m"] == 2)
    assert pair["members"] == [3, 7]
    assert pair["test_acc"] == 100.0 * (by_hand.argmax(1) == y).double().mean().item()
    nll = -by_hand[torch.arange(len(y)), y].log().mean().item()
    assert pair["test_loss"] == pytest.approx(nll, rel=1e-9)
    assert math.isfinite(pair["test_loss"])


# ------------------------------------------------------------------ bad inputs, one line each
def _error(capsys, *argv: str) -> str:
    assert ensemble_main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_ensemble_errors_name_the_problem_and_write_nothing(tmp_path, full_run, capsys):
    assert "has no config.yaml" in _error(capsys, str(tmp_path))
    shutil.copy(full_run / "config.yaml", tmp_path / "config.yaml")
    assert "has no snapshots" in _error(capsys, str(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy, ignore=shutil.ignore_patterns("ensemble.*"))
    line = _error(capsys, str(copy), "--last", "4")
    assert line.startswith("error: --last=4: the run has only 3 snapshot(s) (epochs 1, 3, 7)")
    assert "--last=0" in _error(capsys, str(copy), "--last", "0")
    (copy / "snapshots" / "epoch_0001.pt").write_bytes(b"not a torch file")
    line = _error(capsys, str(copy))
    assert line.startswith("error: snapshot=") and "unreadable" in line
    assert not list(tmp_path.glob("**/ensemble.*"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("schedule=cosine", "epochs=7"),
            "callbacks.snapshots.at=cycle_ends: schedule=cosine has no cycles",
        ),
        ((*SGDR, "schedule.period=1.5", "schedule.period_mult=1"), "must end at whole epochs"),
        ((*SGDR, "callbacks.snapshots.epochs=[8]"), "callbacks.snapshots.epochs=[8]: 8 is after"),
    ],
    ids=["no cycles", "fractional cycles", "past the end"],
)
def test_train_refuses_snapshots_that_cannot_be_taken(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(make_cfg(*SMALL, "+callbacks=snapshots", *overrides), tmp_path)
    assert not (tmp_path / "snapshots").exists() and not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"at": "restarts"}, "callbacks.snapshots.at=restarts: must be one of cycle_ends, epochs"),
        ({"epochs": [0]}, "callbacks.snapshots.epochs=0: must be >= 1"),
        ({"epochs": [3, 3]}, "lists an epoch twice"),
        ({"epochs": "3"}, "must be a list"),
        ({"at": "epochs"}, "at=epochs needs at least one epoch"),
    ],
)
def test_builder_refuses_bad_keys(keys, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        snapshots(torch.nn.Linear(1, 1), **keys)

"""`trainrepro lr-find`, the LR range test (Smith, WACV 2017, Sec. 3.3): the lr ramp it trains
with (and not the configured schedule), its stop at divergence, its suggestion rules on hand-made
curves, and that it writes its three report files and nothing else."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from trainrepro.analysis.lr_find import lr_sequence, main, smooth, suggest

# LeNet-5 on 16x16 synthetic shapes, 16 batches of 16 per epoch: about a second on 2 cores.
TINY = (
    "model=lenet5",
    "dataset=synthetic",
    "dataset.num_train=256",
    "dataset.num_test=16",
    "dataset.image_size=16",
    "batch_size=16",
    "eval_batch_size=16",
    "device=cpu",
    "progress=false",
)
REPORT = ["lr_find.csv", "lr_find.json", "lr_find.png"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: a second thread only waits, 10x slower on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lr_find(tmp_path, monkeypatch, *args: str) -> tuple[int, pd.DataFrame | None, dict | None]:
    """Run the command in ``tmp_path`` (in this process: the CLI's routing to it is
    tests/test_help.py's); (status, the CSV, the JSON) of its report in ./out."""
    monkeypatch.chdir(tmp_path)
    status = main([*TINY, *args, "--out", "out"])
    if status != 0:
        return status, None, None
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == REPORT
    report = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    return status, pd.read_csv(tmp_path / "out" / "lr_find.csv"), report


def test_lr_sequence_formulas():
    assert lr_sequence(0.1, 0.5, 5, "linear") == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lr_sequence(1e-4, 1.0, 5, "exp") == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_smoothing_is_a_bias_corrected_moving_average():
    # beta 0.5: averages 2, 2, 1.5 divided by 1 - 0.5^k = 0.5, 0.75, 0.875.
    assert smooth([4.0, 2.0, 1.0], 0.5) == pytest.approx([4.0, 2.0 / 0.75, 1.5 / 0.875])
    assert smooth([3.0, 1.0], 0.0) == [3.0, 1.0]


def test_it_trains_with_the_ramp_not_the_configured_schedule(tmp_path, monkeypatch, capsys):
    seen = []  # (lr, momentum, weight decay) of every optimizer step, as the step saw them
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        group = self.param_groups[0]
        seen.append((group["lr"], group["momentum"], group["weight_decay"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    # A step schedule at lr 0.05 with a 5-update warmup: neither may show.
    config = ("optimizer.lr=0.05", "schedule.warmup_steps=5", "optimizer.momentum=0.5",
              "optimizer.weight_decay=0.001")  # fmt: skip
    status, df, report = lr_find(
        tmp_path, monkeypatch, *config, "--mode", "linear", "--start", "0.001", "--end", "0.02",
        "--updates", "20", "--stop-factor", "0",
    )  # fmt: skip
    assert status == 0
    expected = [0.001 + 0.001 * i for i in range(20)]  # (0.02 - 0.001) / 19 = 0.001
    assert [lr for lr, _, _ in seen] == pytest.approx(expected)
    assert {(m, wd) for _, m, wd in seen} == {(0.5, 0.001)}  # from the config
    assert df["lr"].tolist() == pytest.approx(expected)
    assert df["update"].tolist() == list(range(1, 21))  # more than one epoch (16 batches)
    assert report["stop"]["reason"] == "completed" and report["updates_done"] == 20
    assert report["settings"]["schedule_not_used"] == "step"
    assert "the configured schedule (step) is not used" in capsys.readouterr().out
    # The recorded smoothing is that of the recorded losses.
    assert df["smoothed_loss"].tolist() == pytest.approx(smooth(df["loss"].tolist(), 0.98))


def test_it_stops_at_a_non_finite_loss(tmp_path, monkeypatch):
    status, df, report = lr_find(
        tmp_path, monkeypatch, "--start", "1e-3", "--end", "1e8", "--updates", "30",
        "--stop-factor", "0",
    )  # fmt: skip
    assert status == 0
    n = len(df)
    assert n < 30 and report["updates_done"] == n
    assert report["stop"]["reason"] == "non_finite_loss" and report["stop"]["update"] == n
    assert not math.isfinite(df["loss"].iloc[-1])
    assert np.isfinite(df["loss"].iloc[:-1]).all()
    assert df["lr"].tolist() == pytest.approx([1e-3 * 10 ** (11 * i / 29) for i in range(n)])


def test_it_stops_when_the_smoothed_loss_passes_the_stop_factor(tmp_path, monkeypatch):
    status, df, report = lr_find(
        tmp_path, monkeypatch, "--start", "1e-3", "--end", "1e8", "--updates", "30",
        "--smooth", "0.5", "--stop-factor", "1.5",
    )  # fmt: skip
    assert status == 0
    assert report["stop"]["reason"] == "loss_exceeded" and len(df) < 30
    running_min = df["smoothed_loss"].cummin()
    over = (df["smoothed_loss"] > 1.5 * running_min).tolist()
    assert over[-1] and not any(over[:-1])  # the first update past 1.5 x the minimum so far


def hand_made_curves() -> tuple[list[float], list[float], list[float]]:
    """61 lrs 1e-5 .. 10 (exp); a loss that falls slowly, fastest at index 23, and is lowest
    at index 40; an accuracy at 10% that climbs from index 30 to its peak at index 44."""
    lrs = lr_sequence(1e-5, 10.0, 61, "exp")
    drops = {21: 0.1, 22: 0.3, 23: 0.4, 24: 0.2}  # loss[i] - loss[i+1]; see below
    loss, value = [], 2.3
    for i in range(61):
        loss.append(value)
        value -= drops.get(i, 0.01 if i < 40 else -0.05)
    # central differences: index 22 -(0.1 + 0.3)/2, 23 -(0.3 + 0.4)/2 (steepest), 24 -(0.4 + 0.2)/2
    acc = [10.0] * 30 + [10.0 + 5.0 * k for k in range(1, 16)] + [80.0, 70.0] * 8
    acc[2] = 2.0  # early noise, left out of the search (the first 6 of 61 updates)
    acc[33] = 14.0  # a dip back below 10 + 0.2 x 75 = 25 after touching it: base_lr after it
    return lrs, loss, acc


def test_suggestions_follow_the_documented_rules():
    lrs, loss, acc = hand_made_curves()
    found = suggest(lrs, loss, acc, start=lrs[0])
    assert np.argmin(loss) == 40
    steepest = found["loss"]["steepest"]
    assert (steepest["update"], steepest["lr"]) == (24, pytest.approx(lrs[23]))
    low = found["loss"]["min_loss/10"]
    assert (low["update"], low["lr"]) == (41, pytest.approx(lrs[40] / 10))
    # accuracy: peak 85 at index 44, trough 10 (not 2), rise 75; base: the update after the last
    # one below 25 (index 33, not the first crossing at 32); max: the first >= 77.5 (80).
    base, top = found["accuracy"]["base_lr"], found["accuracy"]["max_lr"]
    assert (base["update"], base["lr"]) == (35, pytest.approx(lrs[34]))
    assert (top["update"], top["lr"]) == (44, pytest.approx(lrs[43]))
    for group in found.values():
        for pick in group.values():
            assert lrs[0] <= pick["lr"] <= lrs[-1]


def test_no_suggestion_where_the_curves_give_none():
    lrs = lr_sequence(1e-3, 1.0, 40, "exp")
    rising = [2.0 + 0.1 * i for i in range(40)]  # lowest at the first update
    flat = [10.0 + 0.1 * (i % 3) for i in range(40)]  # accuracy never rises a point
    found = suggest(lrs, rising, flat, start=lrs[0])
    for group in found.values():
        for pick in group.values():
            assert pick["lr"] is None and pick["why"]


def test_default_folder_holds_the_report_and_nothing_else(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--updates", "12", "--start", "1e-3", "--end", "1"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find"]
    (folder,) = (tmp_path / "lr_find").iterdir()
    assert folder.name.startswith("lenet5-sgd-")
    assert sorted(p.name for p in folder.iterdir()) == REPORT
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote lr_find/{folder.name}/" in capsys.readouterr().out
    report = json.loads((folder / "lr_find.json").read_text())
    assert report["settings"]["mode"] == "exp" and report["config"]["model"]["name"] == "lenet5"
    assert set(report["suggestions"]) == {"loss", "accuracy"}
    for group in report["suggestions"].values():
        for pick in group.values():
            assert pick["lr"] is None or 1e-3 <= pick["lr"] <= 1.0


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["optimizer.lr=-1"], "error: optimizer.lr=-1: "),
        (["optimizer.lrr=0.1"], "error: optimizer.lrr=0.1: unknown key"),
        (["--mode", "cubic"], "error: --mode=cubic: must be one of exp, linear"),
        (["--end", "1e-9"], "error: --end=1e-9: must be > --start (1e-07)"),
        (["optimizer.lr=0.1,0.2"], "error: optimizer.lr=0.1,0.2: give one value"),
    ],
)
def test_a_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, line):
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(line)
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--out", "out"]) == 2
    assert "error: --out=out: is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]

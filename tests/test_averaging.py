"""Model EMA (Polyak averaging, exponential form) and SWA (Izmailov et al. 2018):
``+callbacks=ema`` / ``+callbacks=swa`` (trainrepro.instruments.averaging).

The EMA is compared with one computed here by hand and with torch's own
``AveragedModel.update_parameters``; SWA's weights with the mean of the per-epoch weights that
``+callbacks=snapshots`` saved, its BN statistics with ``update_bn`` run here on that mean; a
resumed run's averages and columns with an uninterrupted run's, bit for bit on CPU, next to a
resume that drops the callbacks' state (which must differ); bad values fail on one line.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from support import make_cfg, tiny_model
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import trainrepro.instruments.averaging as averaging
from trainrepro.engine.build import build_run
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.instruments.averaging import ema, first_epoch, swa

# 128 images in batches of 32: 4 updates an epoch. LeNet-5 with BN, so buffers are averaged too.
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
    "schedule=constant",
)
# decay 0.5: over 4-12 updates the EMA is far from both the first and the last weights.
BOTH = ("+callbacks=[ema,swa]", "callbacks.ema.decay=0.5", "callbacks.swa.start=1")
COLUMNS = ("test_loss", "test_acc")
# Three epochs with a validation split: its columns come too.
THREE = (*SMALL, "epochs=3", "dataset.val_fraction=0.25")


def load(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def sgd_steps(model: torch.nn.Module, steps: int):
    """Train ``model`` for ``steps`` updates; yield after each (BN buffers move too)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 1, 4, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        yield


# ------------------------------------------------------------------ EMA arithmetic
def test_ema_is_the_hand_computed_average_of_weights_and_buffers():
    decay, model = 0.75, tiny_model()
    callback = ema(model, decay=decay, eval_batch_size=8, save=False)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    run = SimpleNamespace(model=model)
    hand: dict[str, torch.Tensor] = {}
    for update, _ in enumerate(sgd_steps(model, 4), start=1):
        callback.after_step(run, update, torch.tensor(0.0))
        reference.update_parameters(model)
        for name, value in model.state_dict().items():
            if value.is_floating_point():  # the first average is the model itself
                hand[name] = (
                    value.clone() if update == 1 else decay * hand[name] + (1 - decay) * value
                )
    got = callback.averaged.module.state_dict()
    for name, value in hand.items():
        torch.testing.assert_close(got[name], value, msg=name)
    assert "1.running_mean" in hand  # BN statistics are averaged too (use_buffers=True)
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])
    # The callback's own update (no per-update host sync) is torch's, bit for bit.
    assert same_tensors(callback.averaged.state_dict(), reference.state_dict())
    assert callback.count == 4 and int(callback.averaged.n_averaged) == 4


def test_swa_update_bn_leaves_the_global_rng_alone():
    """update_bn runs the model in train mode (dropout draws): the run must not notice."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(16))
    callback = swa(model, start=1, update_bn=True, eval_batch_size=8, save=False)
    callback.averaged.update_parameters(model)
    x = torch.randn(8, 1, 4, 4)
    data = SimpleNamespace(batches=lambda epoch, b: iter([(x, None)] * 2))
    run = SimpleNamespace(train_loader=data, device=torch.device("cpu"), autocast_dtype=None)
    before = torch.get_rng_state()
    callback.update_bn(run, 8, 0)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(callback.averaged.module[2].running_var, torch.ones(16))


# ------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def swa_run(tmp_path_factory):
    """Three epochs with EMA, SWA from epoch 2, and snapshots of every epoch's weights; counts
    the update_bn calls."""
    run_dir = tmp_path_factory.mktemp("swa")
    calls = []
    real = averaging.update_bn
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(averaging, "update_bn", lambda *a, **k: calls.append(1) or real(*a, **k))
        overrides = (
            *THREE,
            "+callbacks=[ema,swa,snapshots]",
            "callbacks.ema.decay=0.5",
            "callbacks.swa.start=2",
            "callbacks.snapshots.at=epochs",
            "callbacks.snapshots.epochs=[1,2,3]",
        )
        assert train(make_cfg(*overrides), run_dir)["status"] == "completed"
    return run_dir, calls


def test_ema_and_swa_columns_are_evaluations_of_the_averages(swa_run):
    run_dir, _ = swa_run
    df = pd.read_csv(run_dir / "metrics.csv")
    for prefix in ("ema", "swa"):
        for split in ("test", "val"):
            assert {f"{prefix}_{split}_{c}" for c in ("loss", "acc")} <= set(df.columns)
            assert (df[f"{prefix}_{split}_loss"] != df[f"{split}_loss"]).all()
    assert df[["ema_test_loss", "ema_val_loss"]].notna().all().all()
    assert df["swa_test_loss"].isna().tolist() == [True, False, False]  # SWA from epoch 2
    assert df["swa_val_loss"].isna().tolist() == [True, False, False]
    # Evaluated with the trainer's own evaluate on the saved average: the column's number.
    run = build_run(make_cfg(*THREE))
    run.model.load_state_dict(load(run_dir / "ema.pt"))
    loss, acc = averaging.evaluate(run, run.test_loader, 64)
    assert (loss, acc) == (df["ema_test_loss"].iloc[-1], df["ema_test_acc"].iloc[-1])


def test_swa_is_the_mean_of_the_epoch_weights_with_bn_recomputed(swa_run):
    run_dir, calls = swa_run
    snaps = [load(run_dir / "snapshots" / f"epoch_{e:04d}.pt") for e in (2, 3)]
    averaged = load(run_dir / "swa.pt")
    run = build_run(make_cfg(*THREE))
    names = {name for name, _ in run.model.named_parameters()}
    for name in names:
        torch.testing.assert_close(averaged[name], (snaps[0][name] + snaps[1][name]) / 2)
    assert len(calls) == 2  # update_bn before each evaluation of the average (epochs 2, 3)
    bn = [k for k in averaged if k.endswith("running_mean")]
    assert bn
    for key in bn:  # neither the last model's statistics nor their mean
        assert not torch.allclose(averaged[key], snaps[1][key])
        assert not torch.allclose(averaged[key], (snaps[0][key] + snaps[1][key]) / 2)
    # They are update_bn's over the last epoch's training batches, run here on the mean.
    run.model.load_state_dict({**averaged, **{k: torch.zeros_like(averaged[k]) for k in bn}})
    torch.optim.swa_utils.update_bn(run.train_loader.batches(2, 32), run.model)
    for key in bn:
        torch.testing.assert_close(run.model.state_dict()[key], averaged[key])


def test_a_resumed_run_continues_both_averages_exactly(tmp_path, monkeypatch):
    cfg = (*SMALL, "epochs=2", *BOTH)
    assert train(make_cfg(*cfg), tmp_path / "full")["status"] == "completed"
    cut = tmp_path / "cut"
    assert train(make_cfg(*cfg), cut, stop_after_epoch=1)["status"] == "interrupted"
    shutil.copytree(cut, tmp_path / "forgetful")
    torch.manual_seed(987)  # a new process starts from another RNG state
    assert train(make_cfg(*cfg, "resume=true"), cut)["status"] == "completed"
    full_df, cut_df = (pd.read_csv(d / "metrics.csv") for d in (tmp_path / "full", cut))
    columns = [f"{p}_{c}" for p in ("ema", "swa") for c in COLUMNS]
    pd.testing.assert_frame_equal(cut_df[columns], full_df[columns], check_exact=True)
    for name in ("ema.pt", "swa.pt"):
        assert same_tensors(load(cut / name), load(tmp_path / "full" / name)), name
    # Negative control: a resume that drops the averages' state ends elsewhere.
    monkeypatch.setattr(averaging.Averaged, "load_state_dict", lambda self, state: None)
    forgetful = tmp_path / "forgetful"
    assert train(make_cfg(*cfg, "resume=true"), forgetful)["status"] == "completed"
    for name in ("ema.pt", "swa.pt"):
        assert not same_tensors(load(forgetful / name), load(tmp_path / "full" / name)), name
    assert (
        pd.read_csv(forgetful / "metrics.csv")["ema_test_loss"].iloc[1]
        != full_df["ema_test_loss"].iloc[1]
    )


# ------------------------------------------------------------------ checks
def test_swa_start_as_a_fraction_or_an_epoch():
    assert first_epoch(0.75, 200) == 150
    assert first_epoch(0.3, 10) == 3  # not 4: 0.3 * 10 is 3.0000000000000004
    assert first_epoch(0.75, 2) == 2
    assert first_epoch(0.01, 10) == 1
    assert first_epoch(7, 10) == 7


@pytest.mark.parametrize(
    ("builder", "keys", "message"),
    [
        (ema, {"decay": 0}, "callbacks.ema.decay=0: must be in (0, 1)"),
        (ema, {"decay": 1.0}, "callbacks.ema.decay=1.0: must be in (0, 1)"),
        (ema, {"decay": "x"}, "callbacks.ema.decay=x: must be a finite number"),
        (ema, {"eval_batch_size": 0}, "callbacks.ema.eval_batch_size=0: must be >= 1"),
        (swa, {"start": 0}, "callbacks.swa.start=0: must be >= 1"),
        (swa, {"start": 1.5}, "callbacks.swa.start=1.5: must be a fraction in (0, 1)"),
        (swa, {"start": True}, "callbacks.swa.start=True: must be a fraction"),
        (swa, {"update_bn": "yes"}, "callbacks.swa.update_bn=yes: must be true or false"),
        (swa, {"save": 1}, "callbacks.swa.save=1: must be true or false"),
    ],
)
def test_bad_values_name_their_key(builder, keys, message):
    with pytest.raises(ConfigError) as e:
        builder(tiny_model(), **keys)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_swa_start_after_the_run_is_refused_before_the_first_update(tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks\.swa\.start=3: is after the run's last"):
        train(make_cfg(*SMALL, "epochs=2", "+callbacks=swa", "callbacks.swa.start=3"), tmp_path)
    assert not (tmp_path / "metrics.csv").exists()

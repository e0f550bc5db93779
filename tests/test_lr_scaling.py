"""Goyal et al. (2017), "Accurate, Large Minibatch SGD": the linear scaling rule
(``schedule.scale_lr_with_batch``, ``reference_batch``) on every schedule, with the gradual
warmup from the unscaled lr, and its line in ``trainrepro plan``."""

from __future__ import annotations

import pytest
from support import TINY, make_cfg

from trainrepro.engine.plan import build_plan, lr_scaling_note, print_plan
from trainrepro.errors import ConfigError
from trainrepro.schedules import SCHEDULES, create_schedule

RUN = {"lr": 0.1, "batch_size": 1024, "momentum": 0.9, "epochs": 10}
EXTRA = {"step": {"milestones": [4, 8]}, "sgdr": {"period": 2.0}}
POINTS = [(0.0, 0), (0.5, 5), (1.0, 10), (3.3, 33), (4.0, 40), (7.9, 79), (9.99, 99)]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_scales_lr_by_batch_over_reference(name):
    """lr x B / reference_batch at every point; batch size and momentum unchanged."""
    plain = create_schedule(name, **RUN, **EXTRA.get(name, {}))
    scaled = create_schedule(
        name, **RUN, **EXTRA.get(name, {}), scale_lr_with_batch=True, reference_batch=256
    )
    for epoch, step in POINTS:
        a, b = plain(epoch, step), scaled(epoch, step)
        assert b.lr == pytest.approx(a.lr * 1024 / 256, rel=1e-12)
        assert (b.batch_size, b.momentum) == (a.batch_size, a.momentum)


def test_reference_batch_unused_without_the_switch():
    a = create_schedule("constant", **RUN)
    b = create_schedule("constant", **RUN, reference_batch=8)
    assert a(0.0, 0) == b(0.0, 0)


def test_gradual_warmup_from_the_unscaled_lr():
    """Goyal et al. Sec. 2.2: start from eta and add a constant amount each iteration until
    k eta after 5 epochs; here k = 8192 / 256 = 32 and warmup_start_factor = 1/k."""
    k, eta = 32, 0.1
    s = create_schedule(
        "step",
        lr=eta,
        batch_size=8192,
        momentum=0.9,
        epochs=90,
        milestones=[30, 60, 80],
        factor=0.1,
        warmup_epochs=5,
        warmup_start_factor=1 / k,
        scale_lr_with_batch=True,
        reference_batch=256,
    )
    assert s(0.0, 0).lr == pytest.approx(eta)
    for e in (1.0, 2.5, 4.0):  # linear in the epoch
        assert s(e, 0).lr == pytest.approx(eta + (k * eta - eta) * e / 5)
    assert s(5.0, 0).lr == pytest.approx(k * eta)
    assert s(29.9, 0).lr == pytest.approx(k * eta)
    assert s(30.0, 0).lr == pytest.approx(k * eta * 0.1)


def test_scaled_after_the_batch_is_chosen_and_not_when_it_grows():
    # scale_batch_with momentum picks B = 128 * 0.1 / 0.02 = 640, then lr = 0.1 * 640 / 128.
    s = create_schedule(
        "step",
        lr=0.1,
        batch_size=128,
        momentum=0.98,
        epochs=10,
        milestones=[5],
        mode="increase_batch",
        scale_batch_with=["momentum"],
        reference_momentum=0.9,
        scale_lr_with_batch=True,
        reference_batch=128,
    )
    assert s(0.0, 0).batch_size == 640 and s(0.0, 0).lr == pytest.approx(0.5)
    assert s(6.0, 0).batch_size == 3200 and s(6.0, 0).lr == pytest.approx(0.5)


def test_min_lr_is_checked_against_the_scaled_lr():
    s = create_schedule("cosine", **RUN, min_lr=0.2, scale_lr_with_batch=True, reference_batch=128)
    assert s(0.0, 0).lr == pytest.approx(0.8) and s(10.0, 100).lr == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"scale_lr_with_batch": "yes"}, "schedule.scale_lr_with_batch"),
        ({"scale_lr_with_batch": True, "reference_batch": 0}, "schedule.reference_batch"),
        ({"reference_batch": 2.5}, "schedule.reference_batch"),
        (
            {"scale_lr_with_batch": True, "scale_batch_with": ["lr"], "reference_lr": 0.05},
            "schedule.scale_lr_with_batch",
        ),
    ],
)
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        create_schedule("constant", **RUN, **kwargs)
    assert err.value.key == key and "\n" not in str(err.value)


def test_plan_shows_the_scaled_lr(capsys):
    cfg = make_cfg(
        *TINY,
        "batch_size=128",
        "optimizer.lr=0.1",
        "schedule.scale_lr_with_batch=true",
        "schedule.reference_batch=32",
        "schedule.warmup_epochs=1",
        "schedule.warmup_start_factor=0.25",
    )
    rows, _ = build_plan(cfg)
    assert rows[0]["lr"] == pytest.approx(0.1) and rows[1]["lr"] == pytest.approx(0.4)
    print_plan(cfg)
    out = capsys.readouterr().out
    assert "linear scaling (Goyal et al. 2017): lr = 0.1 x 128 / 32 = 0.4" in out
    assert lr_scaling_note(make_cfg(*TINY), rows) == ""

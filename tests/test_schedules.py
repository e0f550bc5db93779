"""Schedules: pure functions of progress with the values their papers define."""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trainrepro import schedules
from trainrepro.config import instantiate
from trainrepro.errors import ConfigError
from trainrepro.schedules import SchedulePoint, create_schedule
from trainrepro.schedules.noise import noise_scale, scaled_batch_size

CONF = Path(__file__).resolve().parents[1] / "conf" / "schedule"
YAMLS = sorted(CONF.glob("*.yaml"))
RUNTIME = {"lr": 0.1, "batch_size": 128, "momentum": 0.9, "epochs": 200}
STEPS_PER_EPOCH = 10
GRID = [(e / STEPS_PER_EPOCH, e) for e in range(0, 200 * STEPS_PER_EPOCH + 1, 7)]


def sched(name: str, **kwargs: object) -> schedules.Schedule:
    return create_schedule(name, **{**RUNTIME, **kwargs})


def lr_at(s: schedules.Schedule, epoch: float) -> float:
    return s(epoch, round(epoch * STEPS_PER_EPOCH)).lr


def test_every_option_is_registered() -> None:
    assert {p.stem for p in YAMLS} == set(schedules.SCHEDULES)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_documents_and_matches_builder(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# ")
    node = OmegaConf.load(path)
    assert node.name == path.stem
    fn = schedules.SCHEDULES[path.stem]
    assert node._target_ == f"trainrepro.schedules.{fn.__name__}"
    params = inspect.signature(fn).parameters
    keys = {k for k in node if k not in ("name", "_target_")}
    assert keys == set(params) - set(RUNTIME), "YAML must list every builder key"
    for key in keys:
        default = params[key].default
        default = list(default) if isinstance(default, tuple) else default
        assert OmegaConf.to_container(node)[key] == default, key
        assert f"#   {key} " in text, f"{key} is not explained in the header"


@pytest.mark.parametrize("warmup", [{}, {"warmup_epochs": 5.0}, {"warmup_steps": 30}])
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_schedule_is_pure(path: Path, warmup: dict[str, float]) -> None:
    node = OmegaConf.merge(OmegaConf.load(path), warmup)
    s = instantiate("schedule", node, **RUNTIME)
    forward = [s(e, i) for e, i in GRID]
    shuffled = list(enumerate(GRID))
    random.Random(0).shuffle(shuffled)
    again = dict((k, s(e, i)) for k, (e, i) in shuffled)
    assert forward == [again[k] for k in range(len(GRID))]
    assert forward == [s(e, i) for e, i in GRID]
    for p in forward:
        assert isinstance(p, SchedulePoint)
        assert 0.0 <= p.lr <= RUNTIME["lr"] + 1e-12
        assert p.batch_size == RUNTIME["batch_size"]
        assert p.momentum == RUNTIME["momentum"]
    assert forward[1].lr > 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        forward[0].lr = 1.0  # type: ignore[misc]


def test_constant() -> None:
    s = sched("constant")
    assert s(0.0, 0) == s(123.4, 9999) == SchedulePoint(0.1, 128, 0.9)


def test_step_milestones_decay_lr() -> None:
    s = sched("step")  # WRN: x0.2 at 60, 120, 160
    assert lr_at(s, 0) == lr_at(s, 59.9) == 0.1
    assert lr_at(s, 60) == pytest.approx(0.02)
    assert lr_at(s, 119.9) == pytest.approx(0.02)
    assert lr_at(s, 120) == pytest.approx(0.004)
    assert lr_at(s, 160) == pytest.approx(0.0008)
    assert lr_at(s, 200) == pytest.approx(0.0008)
    assert s(200, 0).batch_size == 128


def test_step_fractional_milestones() -> None:
    s = sched("step", milestones=[0.5, 1.25], factor=0.1, epochs=2)
    assert [lr_at(s, e) for e in (0.4, 0.5, 1.2, 1.25)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_increase_batch_matches_decay_lr_noise_scale() -> None:
    decay = sched("step")
    grow = sched("step", mode="increase_batch")
    for e, i in GRID:
        d, g = decay(e, i), grow(e, i)
        assert g.lr == 0.1
        assert g.lr / g.batch_size == pytest.approx(d.lr / d.batch_size)
    assert [grow(e, 0).batch_size for e in (0, 60, 120, 160)] == [128, 640, 3200, 16000]


def test_increase_batch_rounds_to_whole_batches() -> None:
    s = sched("step", mode="increase_batch", factor=0.3, milestones=[60])
    assert s(60, 0).batch_size == round(128 / 0.3)


def test_hybrid_caps_batch_and_keeps_noise_scale() -> None:
    decay = sched("step")
    hybrid = sched("step", mode="hybrid", max_batch_size=1000)
    for e, i in GRID:
        d, h = decay(e, i), hybrid(e, i)
        assert h.batch_size <= 1000
        assert h.lr / h.batch_size == pytest.approx(d.lr / d.batch_size)
    assert [hybrid(e, 0).batch_size for e in (0, 60, 120, 160)] == [128, 640, 1000, 1000]
    assert hybrid(60, 0).lr == 0.1
    assert hybrid(120, 0).lr == pytest.approx(0.1 * 0.04 * 1000 / 128)


def test_exponential() -> None:
    s = sched("exponential", gamma=0.9)
    assert lr_at(s, 0) == 0.1
    assert lr_at(s, 2.5) == pytest.approx(0.1 * 0.9**2.5)


def test_cosine_endpoints() -> None:
    s = sched("cosine", min_lr=0.001)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 100) == pytest.approx(0.0505)
    assert lr_at(s, 200) == pytest.approx(0.001)
    lrs = [lr_at(s, e) for e in range(201)]
    assert lrs == sorted(lrs, reverse=True)


def test_sgdr_restarts() -> None:
    s = sched("sgdr", period=10, period_mult=2, min_lr=0.0)
    for restart in (0, 10, 30, 70, 150):
        assert lr_at(s, restart) == pytest.approx(0.1)
    for end in (10, 30, 70, 150):
        assert lr_at(s, end - 0.01) < 1e-5
    assert lr_at(s, 5) == pytest.approx(0.05)
    assert lr_at(s, 20) == pytest.approx(0.05)
    assert lr_at(s, 50) == pytest.approx(0.05)
    # A restart reached as e + i/n with rounding error still restarts.
    assert s(sum([0.1] * 300), 3000).lr == pytest.approx(0.1)


def test_sgdr_constant_period() -> None:
    s = sched("sgdr", period=0.3, period_mult=1.0, min_lr=0.01, epochs=3)
    for k in range(10):
        assert s(k * 0.3, 0).lr == pytest.approx(0.1)
        assert s(k * 0.3 + 0.15, 0).lr == pytest.approx(0.055)


def test_cyclic_triangle_and_momentum() -> None:
    s = sched("cyclic", min_lr=0.02, half_period=4, min_momentum=0.85, max_momentum=0.95)
    assert lr_at(s, 0) == pytest.approx(0.02)
    assert lr_at(s, 2) == pytest.approx(0.06)
    assert lr_at(s, 4) == pytest.approx(0.1)
    assert lr_at(s, 8) == pytest.approx(0.02)
    assert lr_at(s, 12) == pytest.approx(0.1)
    assert s(0, 0).momentum == pytest.approx(0.95)
    assert s(4, 0).momentum == pytest.approx(0.85)
    assert s(6, 0).momentum == pytest.approx(0.90)
    assert sched("cyclic")(0, 0).lr == pytest.approx(0.025)  # default min_lr = lr / 4


def test_cyclic_triangular2_halves_amplitude() -> None:
    s = sched("cyclic", min_lr=0.02, half_period=4, mode="triangular2")
    assert [lr_at(s, e) for e in (4, 12, 20)] == pytest.approx([0.1, 0.06, 0.04])
    assert lr_at(s, 16) == pytest.approx(0.02)


def test_cyclic_exp_range_scales_amplitude_by_gamma_per_update() -> None:
    # Smith (2017), Sec. 3.1: lr = base + (max - base) * max(0, 1 - x) * gamma^iteration.
    s = sched("cyclic", min_lr=0.02, half_period=4, mode="exp_range", gamma=0.99)
    assert s(0, 0).lr == pytest.approx(0.02)
    assert s(4, 40).lr == pytest.approx(0.02 + 0.08 * 0.99**40)  # first peak
    assert s(2, 20).lr == pytest.approx(0.02 + 0.08 * 0.5 * 0.99**20)
    assert s(12, 120).lr == pytest.approx(0.02 + 0.08 * 0.99**120)  # second peak
    assert s(8, 80).lr == pytest.approx(0.02)  # troughs stay at base
    # A pure function of (epoch, step): the same point in any order, and the step counts.
    assert s(4, 40) == s(4, 40)
    assert s(4, 400).lr == pytest.approx(0.02 + 0.08 * 0.99**400)
    # gamma 1 is triangular.
    one = sched("cyclic", min_lr=0.02, half_period=4, mode="exp_range", gamma=1.0)
    tri = sched("cyclic", min_lr=0.02, half_period=4)
    assert [one(e, 10 * e).lr for e in (0, 2, 4, 6, 12)] == pytest.approx(
        [tri(e, 10 * e).lr for e in (0, 2, 4, 6, 12)]
    )


def test_warmup_by_epochs() -> None:
    s = sched("cosine", warmup_epochs=5, warmup_start_factor=0.1)
    inner = sched("cosine")
    assert lr_at(s, 0) == pytest.approx(0.01)
    assert lr_at(s, 2.5) == pytest.approx(lr_at(inner, 2.5) * 0.55)
    for e in (5, 6, 100, 200):
        assert s(e, 0) == inner(e, 0)


def test_warmup_by_steps() -> None:
    s = sched("step", warmup_steps=100)
    assert s(0.0, 0).lr == pytest.approx(0.001)  # the 1st update: 1/100 of the rate, never 0
    assert s(0.5, 49).lr == pytest.approx(0.05)  # the 50th
    assert s(1.0, 99).lr == pytest.approx(0.1)  # the 100th: the full rate
    assert s(1.0, 100).lr == 0.1
    assert s(61, 6100) == sched("step")(61, 6100)


def test_warmup_keeps_batch_and_momentum() -> None:
    s = sched("step", mode="increase_batch", milestones=[1, 2], warmup_epochs=3)
    assert s(1.5, 0).batch_size == 640
    assert s(1.5, 0).momentum == 0.9


def test_momentum_none_passes_through() -> None:
    for name in schedules.SCHEDULES:
        assert sched(name, momentum=None)(3.0, 30).momentum is None


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("constant", {"lr": 0.0}, "optimizer.lr"),
        ("cosine", {"lr": -1.0}, "optimizer.lr"),
        ("constant", {"batch_size": 0}, "batch_size"),
        ("constant", {"batch_size": 12.5}, "batch_size"),
        ("constant", {"epochs": 0}, "epochs"),
        ("constant", {"momentum": 1.0}, "optimizer.momentum"),
        ("constant", {"warmup_epochs": 1, "warmup_steps": 10}, "schedule.warmup_steps"),
        ("constant", {"warmup_epochs": -1}, "schedule.warmup_epochs"),
        ("constant", {"warmup_epochs": 201}, "schedule.warmup_epochs"),
        ("constant", {"warmup_steps": -5}, "schedule.warmup_steps"),
        ("constant", {"warmup_steps": 2.5}, "schedule.warmup_steps"),
        ("constant", {"warmup_start_factor": 1.5}, "schedule.warmup_start_factor"),
        ("step", {"milestones": [120, 60]}, "schedule.milestones"),
        ("step", {"milestones": [60, 60]}, "schedule.milestones"),
        ("step", {"milestones": [0, 60]}, "schedule.milestones"),
        ("step", {"milestones": [60, 200]}, "schedule.milestones"),
        ("step", {"milestones": 60}, "schedule.milestones"),
        ("step", {"milestones": [60, "x"]}, "schedule.milestones"),
        ("step", {"epochs": 100}, "schedule.milestones"),
        ("step", {"factor": 0.0}, "schedule.factor"),
        ("step", {"factor": 5.0}, "schedule.factor"),
        ("step", {"mode": "grow"}, "schedule.mode"),
        ("step", {"mode": "increase_batch", "milestones": [60.5]}, "schedule.milestones"),
        ("step", {"mode": "hybrid"}, "schedule.max_batch_size"),
        ("step", {"mode": "hybrid", "max_batch_size": 64}, "schedule.max_batch_size"),
        ("step", {"mode": "hybrid", "max_batch_size": 1000.0}, "schedule.max_batch_size"),
        ("step", {"max_batch_size": 1024}, "schedule.max_batch_size"),
        ("exponential", {"gamma": 0.0}, "schedule.gamma"),
        ("exponential", {"gamma": 1.1}, "schedule.gamma"),
        ("cosine", {"min_lr": 0.1}, "schedule.min_lr"),
        ("cosine", {"min_lr": -0.01}, "schedule.min_lr"),
        ("sgdr", {"period": 0}, "schedule.period"),
        ("sgdr", {"period": 300}, "schedule.period"),
        ("sgdr", {"period_mult": 0.5}, "schedule.period_mult"),
        ("sgdr", {"min_lr": 1.0}, "schedule.min_lr"),
        ("cyclic", {"min_lr": 0.2}, "schedule.min_lr"),
        ("cyclic", {"half_period": 0}, "schedule.half_period"),
        ("cyclic", {"mode": "exp"}, "schedule.mode"),
        ("cyclic", {"mode": "exp_range", "gamma": 0.0}, "schedule.gamma"),
        ("cyclic", {"mode": "exp_range", "gamma": 1.01}, "schedule.gamma"),
        ("cyclic", {"gamma": 0.999}, "schedule.gamma"),  # triangular does not read it
        ("cyclic", {"min_momentum": 0.85}, "schedule.max_momentum"),
        ("cyclic", {"max_momentum": 0.95}, "schedule.min_momentum"),
        ("cyclic", {"min_momentum": 0.95, "max_momentum": 0.85}, "schedule.min_momentum"),
        ("cyclic", {"min_momentum": 0.85, "max_momentum": 1.0}, "schedule.max_momentum"),
        (
            "cyclic",
            {"min_momentum": 0.8, "max_momentum": 0.9, "momentum": None},
            "schedule.min_momentum",
        ),
        ("constant", {"scale_batch_with": ["batch"]}, "schedule.scale_batch_with"),
        ("cosine", {"scale_batch_with": "lr", "reference_lr": 0.1}, "schedule.scale_batch_with"),
        (
            "constant",
            {"scale_batch_with": ["lr", "lr"], "reference_lr": 0.1},
            "schedule.scale_batch_with",
        ),
        ("constant", {"scale_batch_with": ["lr"]}, "schedule.reference_lr"),
        ("constant", {"scale_batch_with": ["lr"], "reference_lr": 0.0}, "schedule.reference_lr"),
        ("sgdr", {"reference_lr": 0.1}, "schedule.reference_lr"),
        ("step", {"scale_batch_with": ["momentum"]}, "schedule.reference_momentum"),
        (
            "constant",
            {"scale_batch_with": ["momentum"], "reference_momentum": 1.0},
            "schedule.reference_momentum",
        ),
        ("cyclic", {"reference_momentum": 0.9}, "schedule.reference_momentum"),
        (
            "constant",
            {"scale_batch_with": ["momentum"], "reference_momentum": 0.9, "momentum": None},
            "schedule.scale_batch_with",
        ),
        (
            "constant",
            {"scale_batch_with": ["lr"], "reference_lr": 1000.0},
            "schedule.scale_batch_with",
        ),
        (
            "step",
            {
                "mode": "hybrid",
                "max_batch_size": 500,
                "lr": 0.5,
                "scale_batch_with": ["lr"],
                "reference_lr": 0.1,
            },
            "schedule.max_batch_size",
        ),
    ],
)
def test_bad_values_name_their_key(name: str, kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        sched(name, **kwargs)
    assert info.value.key == key


def test_create_schedule_rejects_unknown_name_and_keys() -> None:
    with pytest.raises(ConfigError, match="unknown; valid: constant, cosine") as info:
        create_schedule("onecycle", **RUNTIME)
    assert info.value.key == "schedule"
    with pytest.raises(ConfigError) as info:
        sched("cosine", gamma=0.9)
    assert info.value.key == "schedule.gamma"


def test_negative_progress_is_a_bug() -> None:
    with pytest.raises(ValueError):
        sched("constant")(-0.1, 0)


def test_noise_scale() -> None:
    assert noise_scale(0.1, 0.9, 50_000, 128) == pytest.approx(0.1 / 0.1 * (50_000 / 128 - 1))
    assert noise_scale(0.1, None, 50_000, 128) == pytest.approx(0.1 * (50_000 / 128 - 1))
    assert noise_scale(0.1, 0.0, 1000, 1000) == 0.0
    # Smith et al.: lr x0.2 and batch x5 give nearly the same noise scale.
    assert noise_scale(0.02, 0.9, 50_000, 128) == pytest.approx(
        noise_scale(0.1, 0.9, 50_000, 640), rel=0.02
    )
    with pytest.raises(ConfigError):
        noise_scale(0.1, 0.9, 100, 128)
    assert math.isfinite(noise_scale(0.1, 0.0, 2, 1))


def _scaled(lr: float, m: float | None, rules: list[str], **refs: float) -> int:
    return scaled_batch_size(
        128, lr, m, rules=rules, **{"reference_lr": None, "reference_momentum": None, **refs}
    )


def test_scaled_batch_size_reproduces_smith_et_al() -> None:
    """Smith et al. 2018, Sec. 5: from lr 0.1, m 0.9, B 128, B grows with lr and 1/(1-m)."""
    assert _scaled(0.5, 0.9, ["lr"], reference_lr=0.1) == 640
    assert _scaled(0.5, 0.98, ["lr", "momentum"], reference_lr=0.1, reference_momentum=0.9) == 3200
    assert _scaled(0.1, 0.98, ["momentum"], reference_momentum=0.9) == 640
    assert _scaled(0.5, 0.9, []) == 128
    assert _scaled(0.5, None, []) == 128
    assert _scaled(0.1, 0.9, ["lr"], reference_lr=0.3) == 43  # 42.67 rounded
    # The noise scale lr / (B (1 - m)) of the reference run is kept.
    b = _scaled(0.5, 0.98, ["momentum", "lr"], reference_lr=0.1, reference_momentum=0.9)
    assert 0.5 / (b * 0.02) == pytest.approx(0.1 / (128 * 0.1))


def test_every_schedule_starts_at_the_scaled_batch() -> None:
    scale = {"lr": 0.5, "scale_batch_with": ["lr"], "reference_lr": 0.1}
    for name in schedules.SCHEDULES:
        s = sched(name, **scale)
        assert s(0.0, 0).batch_size == 640, name
        assert s(0.0, 0).momentum == 0.9
    both = {**scale, "momentum": 0.98, "scale_batch_with": ["lr", "momentum"]}
    grow = sched("step", mode="increase_batch", reference_momentum=0.9, **both)
    assert [grow(e, 0).batch_size for e in (0, 60, 120)] == [3200, 16000, 80000]
    assert grow(100, 0).lr == 0.5


def test_scaling_keys_from_yaml() -> None:
    node = OmegaConf.merge(
        OmegaConf.load(CONF / "cosine.yaml"),
        {"scale_batch_with": ["lr", "momentum"], "reference_lr": 0.1, "reference_momentum": 0.9},
    )
    s = instantiate("schedule", node, **{**RUNTIME, "lr": 0.5, "momentum": 0.98})
    assert s(0.0, 0).batch_size == 3200

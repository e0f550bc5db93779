"""Decoupled weight decay (Loshchilov & Hutter 2019): ``sgdw`` and ``adamw``'s ``decay_scale``
step by step against the algorithms written out by hand, the decay's independence of the base
lr, the normalized weight decay lambda_norm * sqrt(b / (B T)), and the refusals."""

from __future__ import annotations

import math

import pytest
import torch
from support import tiny_cfg
from torch import nn

from trainrepro.engine.build import build_run, check_config, make_optimizer_and_schedule
from trainrepro.errors import ConfigError
from trainrepro.optim.decoupled import normalize_weight_decay, normalized_weight_decay
from trainrepro.optim.factory import create_optimizer, set_lr, set_momentum

ETAS = (1.0, 0.8, 0.3, 0.9, 0.5, 0.1)  # the schedule multiplier eta_t: falls, rises, falls
LAMBDA = 0.05  # large, so that a decay scaled or placed wrongly is far outside float rounding


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 3)  # a weight and a bias: both decayed by default


def _grads(model: nn.Module, step: int, zero: bool = False) -> None:
    g = torch.Generator().manual_seed(10 + step)
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if zero else torch.randn(p.shape, generator=g)


def _train(name: str, alpha: float, zero_grads: bool = False, **kwargs) -> list[torch.Tensor]:
    """The parameters after each update at lr_t = alpha * eta_t, fed fixed gradients."""
    model = _model()
    opt = create_optimizer(name, model, lr=alpha, **kwargs)
    out = []
    for t, eta in enumerate(ETAS):
        set_lr(opt, alpha * eta)
        _grads(model, t, zero_grads)
        opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
    return out


def _sgdw_reference(alpha: float, momentum: float, nesterov: bool) -> list[list[torch.Tensor]]:
    """SGDW as the official code runs it (UPDATETORCHFILES/sgd.lua, sgd_type 1), in float64:
    v = g (first update) or momentum * v + g;  theta -= alpha eta_t d + eta_t lambda theta_old,
    d = g + momentum * v with Nesterov, else v."""
    model = _model()
    theta = [p.detach().double() for p in model.parameters()]
    bufs: list[torch.Tensor | None] = [None] * len(theta)
    out = []
    for t, eta in enumerate(ETAS):
        _grads(model, t)
        new = []
        for i, (th, p) in enumerate(zip(theta, model.parameters(), strict=True)):
            g = p.grad.double()
            bufs[i] = g.clone() if bufs[i] is None else momentum * bufs[i] + g
            d = g + momentum * bufs[i] if nesterov else bufs[i]
            new.append(th - alpha * eta * d - eta * LAMBDA * th)
        theta = new
        out.append([th.float() for th in theta])
    return out


def _adamw_reference(alpha: float, per_update: float) -> list[list[torch.Tensor]]:
    """Algorithm 2 of the paper, in float64: m, v, their bias corrections, then theta -=
    eta_t (alpha m_hat / (sqrt(v_hat) + eps)) + eta_t * per_update * theta_old; the paper's
    decay is per_update = lambda (decay_scale=schedule), torch's alpha * weight_decay."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    model = _model()
    theta = [p.detach().double() for p in model.parameters()]
    m = [torch.zeros_like(th) for th in theta]
    v = [torch.zeros_like(th) for th in theta]
    out = []
    for t, eta in enumerate(ETAS, start=1):
        _grads(model, t - 1)
        new = []
        for i, (th, p) in enumerate(zip(theta, model.parameters(), strict=True)):
            g = p.grad.double()
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            new.append(th - eta * (alpha * m_hat / (v_hat.sqrt() + eps) + per_update * th))
        theta = new
        out.append([th.float() for th in theta])
    return out


def _assert_steps_equal(got: list, want: list) -> None:
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda s, t=t: f"{t}: {s}")


# ---------------------------------------------------------------- the algorithms, step by step
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdw_follows_the_algorithm_with_a_changing_schedule(nesterov: bool) -> None:
    alpha = 0.1
    got = _train("sgdw", alpha, weight_decay=LAMBDA, momentum=0.9, nesterov=nesterov)
    _assert_steps_equal(got, _sgdw_reference(alpha, 0.9, nesterov))


def test_adamw_schedule_follows_algorithm_2() -> None:
    alpha = 0.01
    got = _train("adamw", alpha, weight_decay=LAMBDA, decay_scale="schedule")
    _assert_steps_equal(got, _adamw_reference(alpha, LAMBDA))


def test_adamw_lr_is_torchs_decay_times_the_current_lr() -> None:
    alpha = 0.01
    got = _train("adamw", alpha, weight_decay=LAMBDA)  # decay_scale=lr, the default
    _assert_steps_equal(got, _adamw_reference(alpha, alpha * LAMBDA))


@pytest.mark.parametrize(
    "kwargs", [{}, {"nesterov": True}, {"dampening": 0.3}], ids=["heavy_ball", "nesterov", "damp"]
)
def test_sgdw_without_decay_is_torchs_sgd(kwargs: dict) -> None:
    """torch's SGD applies the lr outside its buffer, as the official SGDW code: with the lr
    and the momentum changing every update, the two agree exactly."""
    ours, theirs = _model(), _model()
    opt = create_optimizer("sgdw", ours, lr=0.1, weight_decay=0.0, **kwargs)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, foreach=False, **kwargs)
    for t, eta in enumerate(ETAS):
        for o in (opt, ref):
            set_lr(o, 0.1 * eta)
            set_momentum(o, 0.8 + 0.02 * t)
        _grads(ours, t)
        _grads(theirs, t)
        opt.step()
        ref.step()
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not torch.equal(ours.weight, _model().weight)


# ---------------------------------------------------------------- the decay and the base lr
def _decay_only(name: str, alpha: float, **kwargs) -> torch.Tensor:
    """The weight after the updates of ETAS with zero gradients: what the decay alone does."""
    return _train(name, alpha, zero_grads=True, weight_decay=LAMBDA, **kwargs)[-1][0]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sgdw", {}), ("adamw", {"decay_scale": "schedule"})],
    ids=["sgdw", "adamw-schedule"],
)
def test_the_papers_decay_does_not_change_with_the_base_lr(name: str, kwargs: dict) -> None:
    want = _model().weight.detach() * math.prod(1 - eta * LAMBDA for eta in ETAS)
    for alpha in (1e-3, 0.1, 2.0):
        torch.testing.assert_close(_decay_only(name, alpha, **kwargs), want)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("adamw", {}), ("sgdw", {"decay_scale": "lr"})],
    ids=["adamw-lr", "sgdw-lr"],
)
def test_torchs_decay_scales_with_the_base_lr(name: str, kwargs: dict) -> None:
    w0 = _model().weight.detach()
    for alpha in (0.01, 0.1, 2.0):
        want = w0 * math.prod(1 - alpha * eta * LAMBDA for eta in ETAS)
        torch.testing.assert_close(_decay_only(name, alpha, **kwargs), want)


def test_sgdw_decays_norm_scales_towards_their_target() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    gamma = model[1].weight
    with torch.no_grad():
        gamma.fill_(0.5)
    opt = create_optimizer("sgdw", model, lr=0.1, weight_decay=LAMBDA, norm_decay_target=1.0)
    set_lr(opt, 0.1 * 0.4)  # eta = 0.4
    w0 = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(gamma.detach(), torch.full((3,), 0.5 - 0.4 * LAMBDA * (0.5 - 1)))
    torch.testing.assert_close(model[0].weight.detach(), w0 * (1 - 0.4 * LAMBDA))


# ---------------------------------------------------------------- normalized weight decay
def test_normalized_weight_decay_value() -> None:
    # The official CIFAR-10 setting: lambda_norm 0.025, b 128, B 50000; T 200 epochs here.
    # 0.025 * sqrt(128 / 10^7) = 0.025 * 0.0035777088 = 8.944272e-5
    assert normalized_weight_decay(0.025, 128, 50_000, 200) == pytest.approx(8.944272e-5)
    assert normalized_weight_decay(0.1, 64, 512, 2) == pytest.approx(0.025)  # sqrt(1/16)


@pytest.mark.parametrize(("name", "kwargs"), [("sgdw", {}), ("adamw", {"decay_scale": "schedule"})])
def test_weight_decay_norm_sets_the_decay_once_b_B_T_are_known(name: str, kwargs: dict) -> None:
    model = _model()
    alpha = 0.5
    opt = create_optimizer(
        name, model, lr=alpha, weight_decay_norm=0.1, decay_norm_and_bias=False, **kwargs
    )
    _grads(model, 0, zero=True)
    with pytest.raises(RuntimeError, match="normalize_weight_decay"):
        opt.step()  # b, B and T are not known yet
    note = normalize_weight_decay(opt, [64, 64], 512)  # lambda = 0.1 sqrt(64/(512*2)) = 0.025
    assert note is not None and "= 0.025 per update" in note
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    set_lr(opt, alpha * 0.4)
    opt.step()
    torch.testing.assert_close(model.weight.detach(), w0 * (1 - 0.4 * 0.025))
    torch.testing.assert_close(model.bias.detach(), b0)  # decay_norm_and_bias=false


def test_the_run_derives_the_decay_from_its_batch_data_and_epochs() -> None:
    # tiny_cfg: batch 64, 2 epochs, 512 synthetic training images: 0.1 * sqrt(64/1024) = 0.025
    cfg = tiny_cfg("optimizer=sgdw", "optimizer.weight_decay_norm=0.1")
    run = build_run(cfg)
    assert any("= 0.025 per update" in note for note in run.data.notes)
    decay = {g["group"]: g["weight_decay"] for g in run.optimizer.param_groups}
    assert decay == {"decay": pytest.approx(0.025 / 0.1)}  # lambda / lr: eta_t * lambda


# ---------------------------------------------------------------- refusals, one line each
@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("adamw", {"weight_decay_norm": 0.025}, r"optimizer\.weight_decay_norm=0\.025: needs d"),
        ("sgdw", {"weight_decay_norm": 0.02, "decay_scale": "lr"}, r"optimizer\.weight_decay_norm"),
        ("sgdw", {"weight_decay_norm": 0.1, "weight_decay": 1e-3}, r"optimizer\.weight_decay="),
        ("sgdw", {"weight_decay_norm": -1}, r"optimizer\.weight_decay_norm=-1: must be >= 0"),
        ("adamw", {"decay_scale": "paper"}, r"optimizer\.decay_scale=paper: must be lr "),
        ("sgdw", {"fused": True}, r"optimizer\.fused=\[True\]: unknown"),
        ("sgdw", {"norm_decay_target": 1.0, "decay_norm_and_bias": False}, r"optimizer\.norm_d"),
    ],
)
def test_bad_combinations_are_one_line(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message) as error:
        create_optimizer(name, _model(), **kwargs)
    assert "\n" not in str(error.value)


def test_weight_decay_norm_needs_one_batch_size_before_the_data_is_read() -> None:
    cfg = tiny_cfg(
        "optimizer=sgdw",
        "optimizer.weight_decay_norm=0.1",
        "schedule=step",
        "schedule.mode=increase_batch",
        "schedule.milestones=[1]",
    )
    with pytest.raises(ConfigError, match=r"^optimizer\.weight_decay_norm=0\.1: needs one batch"):
        check_config(cfg)
    optimizer, _, note = make_optimizer_and_schedule(tiny_cfg("optimizer=sgdw"), _model())
    assert note is None  # no weight_decay_norm: nothing derived

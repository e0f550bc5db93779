"""Adam-2k (Liu et al. 2020, Sec. 3.1) step by step: the authors' bias correction (default),
our shifted one, and their relations to torch's Adam."""

from __future__ import annotations

import math

import pytest
import torch
from optimizer_steps import grad_stream, make_params, run

from trainrepro.optim import factory as optim
from trainrepro.optim.adaptive import Adam2k


# ---------------------------------------------------------------- (d) Adam-2k
def adam_step_by_hand(
    theta: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    s: int,
    t: int,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam's update with m's correction counting s steps and v's counting t."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    theta = theta - lr * (m / (1 - b1**s)) / ((v / (1 - b2**t)).sqrt() + eps)
    return theta, m, v


def authors_adam_2k(
    theta: float,
    grads: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    wd: float,
    freeze: int,
    eps_on_v_hat: bool = True,
) -> list[float]:
    """The authors' Adam-2k (github.com/LiyuanLucasLiu/RAdam, nmt/my_module/adam2.py, class
    Adam2 with --tb-tag adam_1k --adam-freeze <freeze>) on one scalar, plain Python floats,
    step by step as lines 133-151 there: one step counter for every update; v each update;
    decoupled decay, m and the parameter only once step > freeze; m divided by
    1 - beta1^step. ``eps_on_v_hat``: eps on sqrt(v_hat), as torch's Adam and Adam2k; False:
    on sqrt(v), as the authors' line 136."""
    m = v = 0.0
    out = []
    for step, g in enumerate(grads, 1):
        v = beta2 * v + (1 - beta2) * g * g
        bias_correction1 = 1 - beta1**step
        bias_correction2 = (1 - beta2**step) ** 0.5
        if step > freeze:
            theta -= wd * lr * theta
            m = beta1 * m + (1 - beta1) * g
            if eps_on_v_hat:
                theta -= lr * (m / bias_correction1) / (math.sqrt(v) / bias_correction2 + eps)
            else:
                theta -= lr * bias_correction2 / bias_correction1 * m / (math.sqrt(v) + eps)
        out.append(theta)
    return out


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_adam_2k_default_is_the_authors_code(wd: float, eps: float) -> None:
    k, kw = 30, {"lr": 0.01, "beta1": 0.9, "beta2": 0.99}
    starts = [0.5, -1.25, 2.0]
    g = torch.Generator().manual_seed(3)
    grads = (torch.randn(k + 60, 3, generator=g, dtype=torch.float64) * 0.5 + 0.2).tolist()
    (p,) = params = [torch.nn.Parameter(torch.tensor(starts, dtype=torch.float64))]
    opt = Adam2k(
        params,
        lr=kw["lr"],
        betas=(kw["beta1"], kw["beta2"]),
        eps=eps,
        weight_decay=wd,
        decoupled_weight_decay=True,
        k=k,
    )
    assert opt.defaults["bias_correction"] == "authors"
    ours = run(opt, params, [[torch.tensor(row, dtype=torch.float64)] for row in grads])
    for i, start in enumerate(starts):
        column = [row[i] for row in grads]
        got = [step[0][i].item() for step in ours]
        assert got[:k] == [start] * k
        expected = authors_adam_2k(start, column, eps=eps, wd=wd, freeze=k, **kw)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)
        # The authors' own eps placement: equal when eps = 0, within eps's effect otherwise.
        literal = authors_adam_2k(start, column, eps=eps, wd=wd, freeze=k, eps_on_v_hat=False, **kw)
        assert got == pytest.approx(literal, rel=1e-12 if eps == 0 else 1e-6, abs=1e-14)


@pytest.mark.parametrize(("wd", "decoupled"), [(0.0, False), (0.1, False), (0.1, True)])
@pytest.mark.parametrize("foreach", [False, True])
def test_adam_2k_default_is_torch_adam_resumed_at_step_k(
    wd: float, decoupled: bool, foreach: bool
) -> None:
    """After the k frozen updates: torch's Adam (AdamW) loaded with step k, m = 0, our v."""
    k, lr = 9, 0.01
    grads = grad_stream(k + 50)
    ours_p, ref_p = make_params(), make_params()
    ours = Adam2k(ours_p, lr=lr, weight_decay=wd, decoupled_weight_decay=decoupled, k=k)
    run(ours, ours_p, grads[:k])
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = cls(ref_p, lr=lr, weight_decay=wd, foreach=foreach)
    state = ref.state_dict()
    state["state"] = {
        i: {
            "step": torch.tensor(float(k)),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": ours.state[p]["exp_avg_sq"].clone(),
        }
        for i, p in enumerate(ours_p)
    }
    ref.load_state_dict(state)
    pairs = zip(run(ours, ours_p, grads[k:]), run(ref, ref_p, grads[k:]), strict=True)
    for t, (a, b) in enumerate(pairs, k + 1):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, msg=f"update {t}")


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_2k_shifted_estimates_v_first_then_is_adam(wd: float) -> None:
    """bias_correction="shifted" (the behaviour before issue 8): m / (1 - beta1^(t - k))."""
    k, lr, b1, b2, eps = 7, 0.01, 0.9, 0.999, 1e-8
    params = make_params()
    start = [p.detach().clone() for p in params]
    opt = Adam2k(
        params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, k=k, bias_correction="shifted"
    )
    grads = grad_stream(k + 3)
    history = run(opt, params, grads[:k])
    for i, (p, p0) in enumerate(zip(params, start, strict=True)):
        assert all(torch.equal(step[i], p0) for step in history)  # decay did not move p either
        assert torch.count_nonzero(opt.state[p]["exp_avg"]) == 0
        # v by hand from the k gradients (with the L2 term of the fixed parameters)
        v = torch.zeros_like(p0)
        for step_grads in grads[:k]:
            gi = step_grads[i] + wd * p0
            v = b2 * v + (1 - b2) * gi * gi
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], v, rtol=1e-14, atol=0)
    # From update k + 1: Adam from a fresh m and the accumulated v.
    expected = [
        (p0, torch.zeros_like(p0), opt.state[p]["exp_avg_sq"].clone())
        for p, p0 in zip(params, start, strict=True)
    ]
    for s, step_grads in enumerate(grads[k:], 1):
        run(opt, params, [step_grads])
        for i, p in enumerate(params):
            theta, m, v = expected[i]
            g = step_grads[i] + wd * theta
            expected[i] = adam_step_by_hand(theta, m, v, g, s, k + s, lr, b1, b2, eps)
            torch.testing.assert_close(p.detach(), expected[i][0], rtol=1e-12, atol=1e-14)
    # The first Adam step moves every coordinate by ~lr (m_hat = g, |g| / sqrt(v_hat) ~ 1).
    assert all(not torch.equal(p.detach(), p0) for p, p0 in zip(params, start, strict=True))


def test_adam_2k_shifted_over_authors_is_one_over_1_minus_beta1_to_the_t_minus_k() -> None:
    """Same gradients: each post-freeze update of "shifted" is (1 - beta1^t) / (1 - beta1^(t-k))
    times the authors' (m and v are the same in both; eps 0 makes the ratio exact): ~10x at
    update k + 1 with beta1 0.9, above 1.01x through update k + 43, below from k + 44."""
    k, b1, n = 2000, 0.9, 60
    g = torch.Generator().manual_seed(4)
    grads = [[torch.randn(5, generator=g, dtype=torch.float64) + 0.3] for _ in range(k + n)]
    deltas = {}
    for mode in ("authors", "shifted"):
        (p,) = params = [torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))]
        opt = Adam2k(params, lr=1e-3, betas=(b1, 0.999), eps=0.0, k=k, bias_correction=mode)
        history = run(opt, params, grads)
        steps = [torch.zeros(5, dtype=torch.float64)] + [h[0] for h in history[k:]]
        assert all(torch.equal(h[0], steps[0]) for h in history[:k])
        deltas[mode] = [after - before for before, after in zip(steps[:-1], steps[1:], strict=True)]
    ratios = []
    for s, (a, b) in enumerate(zip(deltas["authors"], deltas["shifted"], strict=True), 1):
        expected = (1 - b1 ** (k + s)) / (1 - b1**s)
        torch.testing.assert_close(b / a, torch.full_like(a, expected), rtol=1e-9, atol=0)
        ratios.append(expected)
    assert ratios[0] == pytest.approx(1 / (1 - b1), rel=1e-12)  # 10x at the first update
    assert min(ratios[:43]) > 1.01 > max(ratios[43:]) > 1.0


def test_adam_2k_bias_correction_is_checked() -> None:
    with pytest.raises(ValueError, match="bias_correction"):
        Adam2k(make_params(), bias_correction="paper")
    for mode in ("authors", "shifted"):
        opt = optim.create_optimizer("adam_2k", torch.nn.Linear(2, 2), bias_correction=mode)
        assert all(group["bias_correction"] == mode for group in opt.param_groups)


def test_plain_adam_moves_at_update_1_and_adam_2k_with_k_0_is_torch_adam() -> None:
    grads = grad_stream(20)
    start = make_params()
    adam_p, zero_p, frozen_p = make_params(), make_params(), make_params()
    adam = torch.optim.Adam(adam_p, lr=0.01, weight_decay=0.1)
    first = run(adam, adam_p, grads[:1])[0]
    assert all(not torch.equal(a, b) for a, b in zip(first, start, strict=True))  # control
    frozen = run(Adam2k(frozen_p, lr=0.01, weight_decay=0.1, k=1), frozen_p, grads[:1])[0]
    assert all(torch.equal(a, b) for a, b in zip(frozen, start, strict=True))
    ha = run(adam, adam_p, grads[1:])
    zero = Adam2k(zero_p, lr=0.01, weight_decay=0.1, k=0)
    hz = run(zero, zero_p, grads)[1:]
    for a, z in zip(ha, hz, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, z, strict=True))


def test_decoupled_adam_2k_freezes_then_is_torch_adamw() -> None:
    grads = grad_stream(12)
    start, frozen_p, zero_p, ref_p = make_params(), make_params(), make_params(), make_params()
    frozen = Adam2k(frozen_p, lr=0.01, weight_decay=0.5, decoupled_weight_decay=True, k=4)
    assert all(
        torch.equal(a, b)
        for step in run(frozen, frozen_p, grads[:4])
        for a, b in zip(step, start, strict=True)
    )
    zero = Adam2k(zero_p, lr=0.01, weight_decay=0.5, decoupled_weight_decay=True, k=0)
    ref = torch.optim.AdamW(ref_p, lr=0.01, weight_decay=0.5)
    for a, b in zip(run(zero, zero_p, grads), run(ref, ref_p, grads), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["adam", "adam_eps"])
def test_adam_decoupled_weight_decay_is_torch_adamw(name: str) -> None:
    model = torch.nn.Linear(3, 2)
    coupled = optim.create_optimizer(name, model, weight_decay=0.1)
    decoupled = optim.create_optimizer(name, model, weight_decay=0.1, decoupled_weight_decay=True)
    assert type(coupled) is torch.optim.Adam
    assert isinstance(decoupled, torch.optim.AdamW)
    assert decoupled.defaults["eps"] == (1e-4 if name == "adam_eps" else 1e-8)

"""Liu et al. (2020): our RAdam and Adam-2k, the rectification functions, the Adam-eps /
Adam-warmup / Adam-2k options and scripts/plot_rectification.py."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import io
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import REPO, make_cfg

from trainrepro import optim
from trainrepro.adaptive import Adam2k, RAdam, rectification, rho, rho_inf
from trainrepro.config import instantiate
from trainrepro.errors import ConfigError

SHAPES = ((3, 4), (5,))


def make_params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def grad_stream(steps: int, dtype: torch.dtype = torch.float64) -> list[list[torch.Tensor]]:
    """Reproducible gradients, with a nonzero mean so the moments do not cancel."""
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g, dtype=dtype) + 0.3 for s in SHAPES] for _ in range(steps)]


def run(
    opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], grads: list[list[torch.Tensor]]
) -> list[list[torch.Tensor]]:
    """Apply the gradients one step at a time; the parameters after every step."""
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


# ---------------------------------------------------------------- (a) against torch.optim.RAdam
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"), [(torch.float64, 1e-12, 1e-14), (torch.float32, 1e-6, 1e-7)]
)
@pytest.mark.parametrize(
    ("weight_decay", "decoupled"), [(0.0, False), (0.1, False), (0.1, True)], ids=str
)
def test_radam_matches_torch_step_by_step(
    weight_decay: float, decoupled: bool, dtype: torch.dtype, rtol: float, atol: float, foreach
) -> None:
    ours_p, torch_p = make_params(dtype), make_params(dtype)
    kw = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay}
    ours = RAdam(ours_p, decoupled_weight_decay=decoupled, **kw)
    ref = torch.optim.RAdam(torch_p, decoupled_weight_decay=decoupled, foreach=foreach, **kw)
    grads = grad_stream(60, dtype)  # steps 1-5 are momentum steps, 6-60 rectified
    pairs = zip(run(ours, ours_p, grads), run(ref, torch_p, grads), strict=True)
    for t, (a, b) in enumerate(pairs, 1):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=f"step {t}")
    for p, q in zip(ours_p, torch_p, strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours.state[p][key], ref.state[q][key], rtol=rtol, atol=atol)
        assert float(ours.state[p]["step"]) == float(ref.state[q]["step"]) == 60


def test_momentum_steps_then_rectified_steps() -> None:
    """With beta2 0.999 the first five updates are lr * m_hat; the sixth is rectified."""
    (p,) = params = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))]
    opt = RAdam(params, lr=0.1, betas=(0.0, 0.999))  # beta1 0: m_hat = g
    deltas = []
    for _ in range(6):
        before = p.detach().clone()
        run(opt, params, [[torch.full((1,), 2.0, dtype=torch.float64)]])
        deltas.append(float(before - p.detach()))
    assert deltas[:5] == pytest.approx([0.2] * 5, rel=1e-12)  # lr * g, not lr * sign(g)
    assert deltas[5] == pytest.approx(0.1 * rectification(6, 0.999), rel=1e-6)  # l_t * g ~ 1


# ---------------------------------------------------------------- (b) the paper's formulas
def paper_radam(
    theta: float,
    grads: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    threshold: float,
    wd: float = 0.0,
    decoupled: bool = False,
) -> list[float]:
    """Algorithm 2 of Liu et al. (2020) on one scalar, plain Python floats."""
    m = v = 0.0
    r_inf = 2 / (1 - beta2) - 1
    out = []
    for t, g in enumerate(grads, 1):
        if decoupled:
            theta -= lr * wd * theta
        else:
            g += wd * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_t = r_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t > threshold:
            l_t = math.sqrt(1 - beta2**t) / (math.sqrt(v) + eps)
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * r_inf / ((r_inf - 4) * (r_inf - 2) * rho_t))
            theta -= lr * r_t * m_hat * l_t
        else:
            theta -= lr * m_hat
        out.append(theta)
    return out


@pytest.mark.parametrize("threshold", [4.0, 5.0])
@pytest.mark.parametrize(("wd", "decoupled"), [(0.0, False), (0.05, False), (0.05, True)])
def test_radam_matches_the_papers_formulas(threshold: float, wd: float, decoupled: bool) -> None:
    starts = [0.5, -1.25, 2.0]
    g = torch.Generator().manual_seed(2)
    grads = (torch.randn(40, 3, generator=g, dtype=torch.float64) * 0.5 + 0.1).tolist()
    kw = {"lr": 0.03, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    (p,) = params = [torch.nn.Parameter(torch.tensor(starts, dtype=torch.float64))]
    opt = RAdam(
        params,
        lr=kw["lr"],
        betas=(kw["beta1"], kw["beta2"]),
        eps=kw["eps"],
        weight_decay=wd,
        decoupled_weight_decay=decoupled,
        rho_threshold=threshold,
    )
    ours = run(opt, params, [[torch.tensor(row, dtype=torch.float64)] for row in grads])
    for i, start in enumerate(starts):
        expected = paper_radam(
            start,
            [row[i] for row in grads],
            threshold=threshold,
            wd=wd,
            decoupled=decoupled,
            **kw,
        )
        got = [step[0][i].item() for step in ours]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # The two thresholds differ at update 5 only: rho_5 = 4.96 with beta2 0.99.
    assert 4.0 < rho(5, 0.99) < 5.0 < rho(6, 0.99)


def test_threshold_4_differs_from_torch_only_at_update_5() -> None:
    a_p, b_p = make_params(), make_params()
    a, b = RAdam(a_p, rho_threshold=4.0), torch.optim.RAdam(b_p)
    grads = grad_stream(5)
    ha, hb = run(a, a_p, grads), run(b, b_p, grads)
    for t in range(4):
        assert all(torch.equal(x, y) for x, y in zip(ha[t], hb[t], strict=True))
    assert not any(torch.allclose(x, y) for x, y in zip(ha[4], hb[4], strict=True))


# ---------------------------------------------------------------- (c) rho and rectification
def test_rho_values() -> None:
    assert rho_inf(0.999) == pytest.approx(1999.0, rel=1e-12)
    assert rho_inf(0.99) == pytest.approx(199.0, rel=1e-12)
    for beta2 in (0.9, 0.99, 0.999, 0.9999):
        assert rho(1, beta2) == pytest.approx(1.0, rel=1e-9)  # one sample, one degree of freedom
    steps = [1, 2, 5, 10, 100, 1000, 10_000, 100_000]
    values = [rho(t, 0.999) for t in steps]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(1999.0, rel=1e-12)
    assert rho(5, 0.999) == pytest.approx(4.996, abs=1e-3) and rho(6, 0.999) > 5
    with pytest.raises(ValueError):
        rho(0, 0.999)
    with pytest.raises(ValueError):
        rho(3, 1.0)


def test_rectification_values() -> None:
    assert [rectification(t, 0.999) for t in range(1, 6)] == [None] * 5
    assert rectification(5, 0.999, threshold=4.0) is not None  # the paper's threshold
    assert rectification(4, 0.999, threshold=4.0) is None
    rs = [rectification(t, 0.999) for t in (6, 10, 100, 1000, 5000, 20_000)]
    assert all(r is not None and 0 < r <= 1 for r in rs)
    assert rs == sorted(rs)
    assert rs[0] == pytest.approx(0.026, abs=1e-3)
    assert rs[-1] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        rectification(10, 0.999, threshold=3.0)


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


# ---------------------------------------------------------------- (e) checkpoints and knobs
OPTS: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
    "radam": lambda ps: RAdam(ps, lr=0.01, weight_decay=0.1),
    "radam_decoupled": lambda ps: RAdam(ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "adam_2k": lambda ps: Adam2k(ps, lr=0.01, weight_decay=0.1, k=8),
    "adam_2k_decoupled": lambda ps: Adam2k(
        ps, lr=0.01, weight_decay=0.1, k=8, decoupled_weight_decay=True
    ),
    "adam_2k_shifted": lambda ps: Adam2k(
        ps, lr=0.01, weight_decay=0.1, k=8, decoupled_weight_decay=True, bias_correction="shifted"
    ),
}


def plain_values_only(obj: object, where: str = "state_dict") -> None:
    """What torch.load(weights_only=True) reads back without allow-listing: tensors and plain
    Python values, in dicts, lists and tuples."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            plain_values_only(key, f"{where} key")
            plain_values_only(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            plain_values_only(value, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (torch.Tensor, bool, int, float, str), (where, obj)


@pytest.mark.parametrize("name", sorted(OPTS))
def test_state_dict_holds_only_tensors_and_plain_values(name: str) -> None:
    params = make_params()
    opt = OPTS[name](params)
    run(opt, params, grad_stream(12))
    state = opt.state_dict()
    plain_values_only(state)
    if name.startswith("adam_2k"):
        expected = "shifted" if name.endswith("shifted") else "authors"
        assert [g["bias_correction"] for g in state["param_groups"]] == [expected]


def test_adam_2k_state_dict_from_before_bias_correction_resumes_shifted() -> None:
    """A state_dict saved before the key existed came from the shifted correction: it goes on
    so, whatever the new optimizer was built with."""
    grads = grad_stream(20)
    straight_p, first_p, resumed_p = make_params(), make_params(), make_params()
    straight = run(OPTS["adam_2k_shifted"](straight_p), straight_p, grads)[-1]
    first = OPTS["adam_2k_shifted"](first_p)
    run(first, first_p, grads[:10])
    saved = copy.deepcopy(first.state_dict())
    for group in saved["param_groups"]:
        del group["bias_correction"]
    with torch.no_grad():
        for a, b in zip(resumed_p, first_p, strict=True):
            a.copy_(b)
    resumed = Adam2k(resumed_p, lr=0.01, weight_decay=0.1, k=8, decoupled_weight_decay=True)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["bias_correction"] == "shifted"
    final = run(resumed, resumed_p, grads[10:])[-1]
    assert all(torch.equal(a, b) for a, b in zip(straight, final, strict=True))


@pytest.mark.parametrize("name", sorted(OPTS))
@pytest.mark.parametrize("split", [3, 12])  # RAdam: before/after rho_t > 5; Adam2k: k = 8
def test_state_dict_round_trip_continues_identically(name: str, split: int) -> None:
    grads = grad_stream(20)
    straight_p = make_params()
    straight = run(OPTS[name](straight_p), straight_p, grads)[-1]

    first_p = make_params()
    first = OPTS[name](first_p)
    run(first, first_p, grads[:split])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first_p], "opt": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_p = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    resumed = OPTS[name](resumed_p)
    resumed.load_state_dict(saved["opt"])
    assert isinstance(resumed.state[resumed_p[0]]["step"], torch.Tensor)
    assert float(resumed.state[resumed_p[0]]["step"]) == split
    final = run(resumed, resumed_p, grads[split:])[-1]
    assert all(torch.equal(a, b) for a, b in zip(straight, final, strict=True))


def test_resumes_from_a_torch_radam_checkpoint() -> None:
    """Runs of the radam option saved before it used our class go on as torch's would."""
    grads = grad_stream(20)
    ref_p, ours_p = make_params(), make_params()
    ref = torch.optim.RAdam(ref_p, lr=0.01)
    run(ref, ref_p, grads[:8])
    ours = RAdam(ours_p, lr=0.01)
    with torch.no_grad():
        for a, b in zip(ours_p, ref_p, strict=True):
            a.copy_(b)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))  # a state_dict shares the tensors
    assert ours.param_groups[0]["rho_threshold"] == 5.0
    for a, b in zip(run(ours, ours_p, grads[8:]), run(ref, ref_p, grads[8:]), strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["radam", "adam_2k", "adam_eps"])
def test_lr_and_momentum_knobs(name: str) -> None:
    model = torch.nn.Linear(3, 2)
    opt = optim.create_optimizer(name, model, **({"k": 1} if name == "adam_2k" else {}))
    assert optim.get_momentum(opt) == 0.9
    optim.set_momentum(opt, 0.85)
    optim.set_lr(opt, 0.05)
    assert optim.get_momentum(opt) == 0.85
    assert all(g["betas"] == (0.85, 0.999) and g["lr"] == 0.05 for g in opt.param_groups)
    for _ in range(8):
        opt.zero_grad()
        model(torch.ones(4, 3)).square().mean().backward()
        opt.step()


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("radam", {"rho_threshold": 3.0}, "optimizer.rho_threshold"),
        ("radam", {"rho_threshold": "five"}, "optimizer.rho_threshold"),
        ("radam", {"rho_threshold": 2000.0}, "optimizer.rho_threshold"),  # rho_inf = 1999
        ("radam", {"decoupled_weight_decay": 1}, "optimizer.decoupled_weight_decay"),
        ("adam_2k", {"k": -1}, "optimizer.k"),
        ("adam_2k", {"k": 2.5}, "optimizer.k"),
        ("adam_2k", {"betas": [0.9, 1.0]}, "optimizer.betas"),
        ("adam_2k", {"lr": 0.0}, "optimizer.lr"),
        ("adam_2k", {"decoupled_weight_decay": "yes"}, "optimizer.decoupled_weight_decay"),
        ("adam_2k", {"bias_correction": "paper"}, "optimizer.bias_correction"),
        ("adam_2k", {"bias_correction": True}, "optimizer.bias_correction"),
        ("adam", {"decoupled_weight_decay": 0}, "optimizer.decoupled_weight_decay"),
        ("adam_eps", {"eps": 0.0}, "optimizer.eps"),
    ],
)
def test_bad_values_name_their_key(name: str, kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        optim.create_optimizer(name, torch.nn.Linear(2, 2), **kwargs)
    assert info.value.key == key


# ---------------------------------------------------------------- (f) the conf options
@pytest.mark.parametrize("option", ["adam_eps", "adam_warmup", "adam_2k", "radam"])
def test_options_compose_and_build(option: str) -> None:
    cfg = make_cfg(f"optimizer={option}")
    assert cfg.optimizer.name == option
    model = torch.nn.Linear(3, 2)
    opt = instantiate("optimizer", cfg.optimizer, model)
    expected = {"adam_eps": torch.optim.Adam, "adam_warmup": torch.optim.Adam}
    assert isinstance(opt, expected.get(option, Adam2k if option == "adam_2k" else RAdam))
    if option == "adam_eps":
        assert opt.defaults["eps"] == 1e-4
    if option == "adam_2k":
        assert opt.defaults["k"] == 2000
        assert opt.defaults["bias_correction"] == "authors"


@pytest.mark.parametrize("schedule", ["step", "cosine", "constant"])
def test_adam_warmup_sets_the_schedules_warmup(schedule: str) -> None:
    cfg = make_cfg("optimizer=adam_warmup", f"schedule={schedule}")
    assert cfg.schedule.name == schedule
    assert cfg.schedule.warmup_steps == 1000
    assert make_cfg("optimizer=adam", f"schedule={schedule}").schedule.warmup_steps == 0
    cli = make_cfg("optimizer=adam_warmup", f"schedule={schedule}", "schedule.warmup_steps=50")
    assert cli.schedule.warmup_steps == 50


def test_adam_warmup_optimizer_node_is_adam() -> None:
    """What test_optim checks of flat option files, for this _global_ one's optimizer node."""
    path = REPO / "conf" / "optimizer" / "adam_warmup.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_\n")
    node = OmegaConf.load(path)
    assert set(node) == {"optimizer", "schedule"}
    assert node.optimizer._target_ == "trainrepro.optim.adam"
    assert optim.OPTIMIZERS["adam_warmup"] is optim.adam
    params = inspect.signature(optim.adam).parameters
    keys = {k for k in node.optimizer if k not in ("name", "_target_")}
    assert keys == set(params) - {"model"}
    for key in keys:
        default = params[key].default
        default = list(default) if isinstance(default, tuple) else default
        assert OmegaConf.to_container(node.optimizer)[key] == default, key
        assert f"#   {key} " in text, key
    assert "#   warmup_steps " in text


def test_every_optimizer_header_says_how_weight_decay_works() -> None:
    for path in sorted((REPO / "conf" / "optimizer").glob("*.yaml")):
        text = path.read_text()
        if "weight_decay:" not in text:  # storm: the paper's algorithm has no decay
            continue
        header = text.split("\n_target_")[0].split("\noptimizer:")[0]
        assert "L2 (coupled)" in header or "DECOUPLED" in header, path.name


# ---------------------------------------------------------------- plot script
def test_plot_rectification_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "plot_rectification", REPO / "scripts" / "plot_rectification.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figs" / "rect"
    assert (
        module.main(["--steps", "300", "--beta2", "0.99", "--beta2", "0.999", "--out", str(out)])
        == 0
    )
    for suffix in (".png", ".pdf"):
        path = Path(f"{out}{suffix}")
        assert path.is_file() and path.stat().st_size > 1000
    assert "rect.png" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main(["--threshold", "3", "--out", str(out)])

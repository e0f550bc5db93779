"""Liu et al. (2020): our RAdam, the rectification functions, the Adam-eps / Adam-warmup /
Adam-2k options, state dicts, and scripts/plot_rectification.py (Adam-2k's own updates:
tests/test_adam_2k.py)."""

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
from optimizer_steps import grad_stream, make_params, run
from support import REPO, make_cfg

from trainrepro.config import instantiate
from trainrepro.errors import ConfigError
from trainrepro.optim import factory as optim
from trainrepro.optim.adaptive import Adam2k, RAdam, rectification, rho, rho_inf


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
    step = resumed.state[resumed_p[0]]["step"]
    assert type(step) is int and step == split  # a number: a step reads no tensor back
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
    assert node.optimizer._target_ == "trainrepro.optim.factory.adam"
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

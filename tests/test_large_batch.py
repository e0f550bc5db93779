"""LARS and LAMB (trainrepro.optim.large_batch) against the papers' formulas, written out step
by step here, and against timm's Lars/Lamb (a test-only reference; skipped without timm)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.optim.factory import set_lr, set_momentum, sgd
from trainrepro.optim.large_batch import Lamb, Lars, lamb, lars

STEPS = 5


class Net(nn.Module):
    """A conv, a norm layer and a linear layer: tensors with ndim 4, 2 and 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)  # BN makes a bias gradient noise
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def grads(step: int, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fixed pseudo-random gradients, the same for every optimizer under comparison."""
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen) * (0.1 + i) for i, p in enumerate(params)]


def run_with_grads(opt: torch.optim.Optimizer, net: nn.Module, lrs: list[float]) -> None:
    params = list(net.parameters())
    for t, lr in enumerate(lrs):
        for p, g in zip(params, grads(t, params), strict=True):
            p.grad = g.clone()
        set_lr(opt, lr)
        opt.step()


def train_steps(opt: torch.optim.Optimizer, net: nn.Module, lrs: list[float]) -> None:
    """Real forward/backward steps on fixed data, lr changing per step."""
    gen = torch.Generator().manual_seed(7)
    x, y = torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 5, (16,), generator=gen)
    for lr in lrs:
        set_lr(opt, lr)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def assert_same_params(a: nn.Module, b: nn.Module, rtol: float = 1e-6, atol: float = 1e-7):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)


# ---------------------------------------------------------------- the papers' formulas
@pytest.mark.parametrize("clip", [False, True])
def test_lars_matches_algorithm_1_at_constant_lr(clip):
    """You, Gitman & Ginsburg 2017, eq. 6 and Algorithm 1, per layer l:
    lambda_l = eta ||w|| / (||g|| + beta ||w||);  v = m v + gamma lambda_l (g + beta w);
    w -= v. Biases and norm tensors (excluded): v = m v + gamma g; w -= v.
    LARC: lambda_l -> min(lambda_l / gamma, 1)."""
    eta, beta, m, gamma = 0.001, 5e-4, 0.9, 2.0
    net = make_net()
    opt = lars(net, lr=gamma, momentum=m, weight_decay=beta, trust_coefficient=eta, eps=0.0,
               trust_clip=clip)  # fmt: skip
    ref = [p.detach().clone() for p in net.parameters()]
    vel = [torch.zeros_like(w) for w in ref]
    run_with_grads(opt, net, [gamma] * STEPS)
    for t in range(STEPS):
        for i, g in enumerate(grads(t, ref)):
            w = ref[i]
            if w.ndim > 1:
                local = eta * w.norm() / (g.norm() + beta * w.norm())
                if clip:
                    local = torch.clamp(local / gamma, max=1.0)
                vel[i] = m * vel[i] + gamma * local * (g + beta * w)
            else:
                vel[i] = m * vel[i] + gamma * g
            ref[i] = w - vel[i]
    for p, w in zip(net.parameters(), ref, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-7)


def test_lars_lr_outside_the_buffer_differs_from_algorithm_1_only_when_lr_changes():
    """Our (timm's, torch SGD's) order: v = m v + d; w -= lr v. After one step at lr a and one
    at lr b: ours moves w by (a + b(1 + m)) d1-ish terms, Algorithm 1 by (a + b + m a)."""
    net = make_net()
    opt = lars(net, momentum=0.9, weight_decay=0.0, adapt_norm_and_bias=True)
    w0 = net.fc.weight.detach().clone()
    d = [None, None]
    for t, lr in enumerate([1.0, 3.0]):
        params = list(net.parameters())
        g = grads(t, params)[next(i for i, p in enumerate(params) if p is net.fc.weight)]
        w = net.fc.weight.detach()
        d[t] = 0.001 * w.norm() / (g.norm() + 1e-8) * g
        run_with_grads_one(opt, net, t, lr)
    ours = w0 - 1.0 * d[0] - 3.0 * (0.9 * d[0] + d[1])
    paper = w0 - 1.0 * d[0] - (0.9 * 1.0 * d[0] + 3.0 * d[1])
    torch.testing.assert_close(net.fc.weight.detach(), ours, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours, paper, rtol=1e-4, atol=0)


def run_with_grads_one(opt: torch.optim.Optimizer, net: nn.Module, t: int, lr: float) -> None:
    params = list(net.parameters())
    for p, g in zip(params, grads(t, params), strict=True):
        p.grad = g.clone()
    set_lr(opt, lr)
    opt.step()


def test_lars_with_no_adaptation_is_our_sgd():
    a, b = make_net(), make_net()
    opt_a = lars(a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 decay_norm_and_bias=True)  # fmt: skip
    for group in opt_a.param_groups:
        group["adapt"] = False
    opt_b = sgd(b, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    train_steps(opt_a, a, [0.1, 0.2, 0.05])
    train_steps(opt_b, b, [0.1, 0.2, 0.05])
    assert_same_params(a, b)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_lamb_matches_algorithm_2(clip, bias_correction):
    """You et al. 2020, Algorithm 2, per layer: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    m_hat = m / (1-b1^t); v_hat = v / (1-b2^t); r = m_hat / (sqrt(v_hat) + eps);
    w -= lr phi(||w||) / ||r + lambda w|| (r + lambda w), phi(z) = z. Excluded tensors (ndim
    <= 1): w -= lr r. LAMBC: the ratio clipped at 1."""
    b1, b2, eps, lam, lr = 0.9, 0.999, 1e-6, 0.01, 0.02
    net = make_net()
    opt = lamb(net, lr=lr, betas=[b1, b2], eps=eps, weight_decay=lam, trust_clip=clip,
               bias_correction=bias_correction)  # fmt: skip
    ref = [p.detach().clone() for p in net.parameters()]
    ms = [torch.zeros_like(w) for w in ref]
    vs = [torch.zeros_like(w) for w in ref]
    run_with_grads(opt, net, [lr] * STEPS)
    for t in range(1, STEPS + 1):
        for i, g in enumerate(grads(t - 1, ref)):
            w = ref[i]
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            c1, c2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
            r = (ms[i] / c1) / ((vs[i] / c2).sqrt() + eps)
            if w.ndim > 1:
                u = r + lam * w
                ratio = w.norm() / u.norm()
                if clip:
                    ratio = torch.clamp(ratio, max=1.0)
                ref[i] = w - lr * ratio * u
            else:
                ref[i] = w - lr * r
    for p, w in zip(net.parameters(), ref, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-7)


def test_trust_ratio_is_one_for_a_zero_tensor():
    net = make_net()
    with torch.no_grad():
        net.fc.weight.zero_()
    for opt in (lars(net, lr=0.5, momentum=0.0, weight_decay=0.0), lamb(net, weight_decay=0.0)):
        run_with_grads_one(opt, net, 0, 0.5)
        assert net.fc.weight.abs().sum() > 0  # a zero-initialized layer still moves


def test_lamb_global_grad_clipping():
    """max_grad_norm: every gradient divided by max(||g||_global / max_grad_norm, 1) first."""
    a, b = make_net(), make_net()
    opt_a = lamb(a, lr=0.01, max_grad_norm=0.5)
    opt_b = lamb(b, lr=0.01)
    params = list(b.parameters())
    for t in range(3):
        gs = grads(t, params)
        total = torch.linalg.vector_norm(torch.stack([g.norm() for g in gs]))
        for p, q, g in zip(a.parameters(), params, gs, strict=True):
            p.grad, q.grad = g.clone(), g / max(total / 0.5, 1.0)
        opt_a.step()
        opt_b.step()
    assert_same_params(a, b)


# ---------------------------------------------------------------- exclusions and knobs
@pytest.mark.parametrize("build", [lars, lamb])
@pytest.mark.parametrize(("decay", "adapt"), [(False, False), (True, False), (True, True)])
def test_norm_and_bias_switches(build, decay, adapt):
    net = make_net()
    opt = build(net, weight_decay=0.1, decay_norm_and_bias=decay, adapt_norm_and_bias=adapt)
    small = next(g for g in opt.param_groups if g["group"] == "no_decay")
    large = next(g for g in opt.param_groups if g["group"] == "decay")
    assert all(p.ndim <= 1 for p in small["params"]) and all(p.ndim > 1 for p in large["params"])
    assert (small["weight_decay"], small["adapt"]) == (0.1 if decay else 0.0, adapt)
    assert (large["weight_decay"], large["adapt"]) == (0.1, True)


def test_momentum_schedules_reach_both():
    net = make_net()
    opt_l, opt_b = lars(net), lamb(net)
    set_momentum(opt_l, 0.8)
    set_momentum(opt_b, 0.85)
    assert opt_l.param_groups[0]["momentum"] == 0.8
    assert opt_b.param_groups[0]["betas"] == (0.85, 0.999)


@pytest.mark.parametrize(
    ("build", "kwargs", "key"),
    [
        (lars, {"trust_coefficient": 0.0}, "optimizer.trust_coefficient"),
        (lars, {"nesterov": True, "momentum": 0.0}, "optimizer.nesterov"),
        (lars, {"trust_clip": "yes"}, "optimizer.trust_clip"),
        (lars, {"adapt_norm_and_bias": 1}, "optimizer.adapt_norm_and_bias"),
        (lars, {"eps": -1.0}, "optimizer.eps"),
        (lamb, {"betas": [0.9, 1.0]}, "optimizer.betas"),
        (lamb, {"max_grad_norm": 0.0}, "optimizer.max_grad_norm"),
        (lamb, {"bias_correction": None}, "optimizer.bias_correction"),
        (lamb, {"lr": 0.0}, "optimizer.lr"),
    ],
)
def test_bad_values_name_the_key(build, kwargs, key):
    with pytest.raises(ConfigError) as err:
        build(make_net(), **kwargs)
    assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize("build", [lars, lamb])
def test_state_dict_round_trip_continues_identically(build):
    a = make_net()
    opt_a = build(a, lr=0.05)
    train_steps(opt_a, a, [0.05, 0.05])
    b = copy.deepcopy(a)
    opt_b = build(b, lr=0.05)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if through a file
    train_steps(opt_a, a, [0.05, 0.02])
    train_steps(opt_b, b, [0.05, 0.02])
    assert_same_params(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- timm, step by step
def _timm_groups(net: nn.Module, wd: float) -> list[dict]:
    """timm adapts exactly the tensors with weight decay (or always_adapt): ours by default."""
    big = [p for p in net.parameters() if p.ndim > 1]
    small = [p for p in net.parameters() if p.ndim <= 1]
    return [
        {"params": big, "weight_decay": wd, "always_adapt": True},
        {"params": small, "weight_decay": 0.0, "always_adapt": False},
    ]


LRS = [0.5, 1.0, 2.0, 2.0, 0.3, 0.1]  # a warmup, then decay: the order of lr and momentum counts


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_lars_matches_timm(nesterov, clip):
    timm_lars = pytest.importorskip("timm.optim.lars", reason="timm is a test-only reference")
    a, b = make_net(), make_net()
    ours = lars(a, lr=1.0, momentum=0.9, nesterov=nesterov, weight_decay=5e-4, trust_clip=clip)
    theirs = timm_lars.Lars(
        _timm_groups(b, 5e-4), lr=1.0, momentum=0.9, nesterov=nesterov, trust_coeff=0.001,
        eps=1e-8, trust_clip=clip, foreach=False,
    )  # fmt: skip
    for t in range(len(LRS)):
        train_steps(ours, a, LRS[t : t + 1])
        train_steps(theirs, b, LRS[t : t + 1])
        assert_same_params(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_lamb_matches_timm(clip, max_grad_norm):
    timm_lamb = pytest.importorskip("timm.optim.lamb", reason="timm is a test-only reference")
    a, b = make_net(), make_net()
    lrs = [x / 100 for x in LRS]
    ours = lamb(a, lr=0.01, weight_decay=0.01, trust_clip=clip, max_grad_norm=max_grad_norm)
    theirs = timm_lamb.Lamb(_timm_groups(b, 0.01), lr=0.01, eps=1e-6, trust_clip=clip,
                            max_grad_norm=max_grad_norm, foreach=False)  # fmt: skip
    for t in range(len(lrs)):
        train_steps(ours, a, lrs[t : t + 1])
        train_steps(theirs, b, lrs[t : t + 1])
        assert_same_params(a, b, rtol=1e-5, atol=1e-7)


def test_classes_are_exported_for_isinstance_checks():
    assert isinstance(lars(make_net()), Lars) and isinstance(lamb(make_net()), Lamb)


# ---------------------------------------------------------------- the claims (experiment)
def lb_results(accs: dict[tuple[str, int], list[float]], tmp_path):
    """A Results of two epochs per run: test accuracy per (preset, batch) per seed (NaN: the
    run diverged); 10,000 images an epoch, a 1-epoch warmup for the scaled presets."""
    import pandas as pd

    from trainrepro.reproduce.paper import Results
    from trainrepro.reproduce.papers.largebatch import PAPER

    rows = []
    for (preset, batch), values in accs.items():
        for seed, acc in enumerate(values):
            for epoch in (1, 2):
                rows.append({
                    "run_dir": f"{preset}/b{batch}/seed{seed}", "preset": preset,
                    "batch": batch, "epoch": epoch, "updates": epoch * (10_000 // batch),
                    "status": "completed" if acc == acc else "diverged", "test_acc": acc,
                    "train_loss": 1.0, "schedule.warmup_epochs": 0.0 if preset == "sgd" else 1.0,
                })  # fmt: skip
    return Results(PAPER, "quick", "largebatch-quick", pd.DataFrame(rows), None, tmp_path, "x")


def test_largebatch_claims_pair_runs_by_seed(tmp_path):
    from trainrepro.reproduce.papers import largebatch_claims as lc

    res = lb_results({
        ("sgd", 32): [60.0, 61.0, 62.0], ("sgd", 256): [50.0, 50.0, 50.0],
        ("sgd", 2048): [30.0, 33.0, 36.0], ("sgd_scaled", 256): [59.0, 60.0, 61.5],
        ("sgd_scaled", 2048): [float("nan"), 58.0, 59.0],
        ("nesterov", 256): [55.0, 55.0, 55.0], ("nesterov", 2048): [40.0, 40.0, 40.0],
        ("lars", 256): [50.0, 56.0, 50.0], ("lars", 2048): [41.0, 39.0, float("nan")],
        ("lamb", 256): [52.0, 50.0, 50.0], ("lamb", 2048): [30.0, 30.0, 30.0],
    }, tmp_path)  # fmt: skip
    assert lc.sizes(res) == (32, 256, 2048)
    assert lc.measure_unscaled_drop(res).values == (30.0, 28.0, 26.0)
    assert lc.measure_scaling_recovers(res).values == (-1.0, -1.0, -0.5)
    assert lc.measure_scaling_largest(res).values == (lc.CHANCE - 60.0, -3.0, -3.0)
    assert lc.measure_layerwise(res).values == (30.0, 30.0, lc.CHANCE)  # diverged: chance
    # per seed, the worse of the two batches: (3, -1), (-1, 1), (5, 10)
    assert lc.measure_nesterov(res).values == (-1.0, -1.0, 5.0)
    # the regime each claim at a large batch states: 4 updates an epoch, 1-epoch warmup
    assert lc.regime(res, 2048) == "B=2048: 8 updates in all (4 an epoch), a warmup of 4 updates"
    assert lc.regime(res, 2048, "sgd") == "B=2048: 8 updates in all (4 an epoch)"
    assert "B=2048: 8 updates in all" in lc.measure_scaling_largest(res).detail
    assert lc.measure_sharpness(res).status == "not run"


def test_sharpness_is_relative_to_the_loss_at_the_solution(tmp_path):
    from trainrepro.reproduce.papers import largebatch_claims as lc
    from trainrepro.reproduce.papers.largebatch_landscape import relative_rise

    assert relative_rise((3.0, 2.0, 4.0)) == pytest.approx(0.75)
    res = lb_results({("sgd", 32): [60.0], ("sgd", 2048): [30.0]}, tmp_path)
    res.extras["sharpness"] = {
        "batches": [32, 2048], "directions": [0, 1], "radius": 0.5, "samples": 100,
        "seeds": {"0": {"small": [0.8, 0.6], "large": [0.5, 0.5]},
                  "1": {"small": [0.4, 0.4], "large": [0.9, 0.7]}},
    }  # fmt: skip
    got = lc.measure_sharpness(res)
    assert got.values == pytest.approx((-0.2, 0.4))  # large minus small, mean over directions


def test_committed_largebatch_quick_verdicts():
    """The committed report: the quick profile run at seeds 0-2 (all 33 runs), each claim
    decided by its interval over three seeds, sharpness from the runs' checkpoints."""
    import json

    from support import REPO

    out = REPO / "results/largebatch-quick"
    got = {c["key"]: (c["status"], c["n"], c["mean"])
           for c in json.loads((out / "verdicts.json").read_text())["claims"]}  # fmt: skip
    assert got["unscaled_drop"] == ("pass", 3, pytest.approx(31.46, abs=0.01))
    assert got["scaling_recovers"] == ("fail", 3, pytest.approx(-8.25, abs=0.01))
    assert got["scaling_recovers_largest"] == ("fail", 3, pytest.approx(-48.33, abs=0.01))
    assert got["layerwise_stable"] == ("pass", 3, pytest.approx(29.26, abs=0.01))
    assert got["nesterov_matches"] == ("fail", 3, pytest.approx(-21.95, abs=0.01))
    assert got["sharp_minima"] == ("fail", 3, pytest.approx(-0.39, abs=0.01))
    assert (out / "sharpness.json").is_file()  # computed from the checkpoints, kept
    assert (out / "error_vs_batch.png").is_file() and not (out / "accuracy_vs_batch.png").exists()

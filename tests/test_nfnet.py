"""Normalizer-free networks (Brock et al. 2021a/b): Scaled WS, NF-ResNet, AGC, global-norm
clipping and signal-propagation plots, each against the papers' formulas, a reference written
here, and timm's implementations when timm is installed (a dev extra, not a dependency)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.instruments.clipping import adaptive_clip_, agc, clip_norm, unitwise_norm
from trainrepro.instruments.signal_prop import (
    channel_stats,
    measure,
    residual_blocks,
    signal_propagation,
)
from trainrepro.models import MODELS, create_model
from trainrepro.models.nf_resnet import NFBasicBlock, expected_stds
from trainrepro.norms.factory import NORM_TYPES, NORMS, batch_norm, no_norm
from trainrepro.norms.scaled_ws import (
    GAMMA_RELU,
    GAMMA_RELU_DEEPMIND,
    GammaReLU,
    ScaledStdConv2d,
    scaled_standardize,
)


def nf(**kwargs) -> nn.Module:
    args = {"depth": 8, "num_classes": 10, "in_channels": 3, "image_size": 32}
    return create_model("nf_resnet", **{**args, "norm_layer": no_norm(), **kwargs})


# ---------------------------------------------------------------- Scaled WS
def test_gamma_relu_is_the_analytic_constant_and_matches_deepmind() -> None:
    assert GAMMA_RELU == pytest.approx(1.0 / math.sqrt((1 - 1 / math.pi) / 2), rel=1e-12)
    assert GAMMA_RELU == pytest.approx(1.7128585504496627, rel=1e-12)
    assert GAMMA_RELU_DEEPMIND == pytest.approx(GAMMA_RELU, rel=1e-3)  # MC estimate, +0.06%
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert GammaReLU()(z).var().item() == pytest.approx(1.0, abs=5e-3)


def test_scaled_standardize_is_the_papers_formula() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * 3 + 1
    gain = torch.rand(8) + 0.5
    gamma = GAMMA_RELU
    n = 4 * 9
    rows = w.reshape(8, -1)
    mean, std = rows.mean(1, keepdim=True), rows.std(1, unbiased=False, keepdim=True)
    reference = gain[:, None] * gamma * (rows - mean) / (std * math.sqrt(n))
    out = scaled_standardize(w, gain, gamma).reshape(8, -1)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    # Each unit: zero mean, squared norm gamma^2 * gain^2 (so unit variance in, unit out).
    torch.testing.assert_close(out.mean(1), torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.pow(2).sum(1), (gamma * gain) ** 2, rtol=1e-5, atol=0)


def test_scaled_standardize_eps_clamps_var_times_fan_in() -> None:
    w = torch.zeros(2, 1, 1, 1)
    w[1] = 5.0  # constant rows: variance 0, DeepMind's max(var * N, eps) keeps it finite
    out = scaled_standardize(w, torch.ones(2), eps=1e-4)
    assert torch.isfinite(out).all() and not out.any()


def test_scaled_std_conv_preserves_unit_variance() -> None:
    torch.manual_seed(0)
    conv = ScaledStdConv2d(64, 64, 3)
    x = torch.randn(16, 64, 16, 16)
    with torch.no_grad():
        y = conv(x)
    assert y.var().item() == pytest.approx(1.0, rel=0.1)
    assert conv.gain.shape == (64,) and conv.bias is not None and not conv.bias.any()


def test_scaled_std_conv_matches_timm() -> None:
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    ours = ScaledStdConv2d(8, 16, 3, gamma=GAMMA_RELU)
    theirs = timm_layers.ScaledStdConv2d(8, 16, 3, padding=1, gamma=GAMMA_RELU)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
        ours.gain.uniform_(0.5, 1.5)
        theirs.gain.copy_(ours.gain.view(-1, 1, 1, 1))
        ours.bias.normal_()
        theirs.bias.copy_(ours.bias)
        x = torch.randn(2, 8, 10, 10)
        # timm adds eps 1e-6 to the variance, DeepMind clamps var * N at 1e-4: equal to 1e-4.
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- NF-ResNet
def test_nf_resnet_is_registered_and_has_no_normalization_anywhere() -> None:
    assert "nf_resnet" in MODELS
    model = nf(depth=20)
    assert not any(isinstance(m, NORM_TYPES) for m in model.modules())
    assert not any("norm" in type(m).__name__.lower() for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(c, ScaledStdConv2d) for c in convs)
    assert sum(p.numel() for p in model.parameters()) == 272_474  # = BN-ResNet-20, shortcut B


@pytest.mark.parametrize("norm", [n for n in NORMS if n != "none"])
def test_nf_resnet_refuses_every_normalization_but_none(norm: str) -> None:
    kwargs = {"ghost_bn": {"ghost_batch_size": 2}, "gn": {"groups": 2}}.get(norm, {})
    with pytest.raises(ConfigError) as info:
        nf(norm_layer=NORMS[norm](**kwargs))
    assert info.value.key == "normalization" and info.value.value == norm
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"depth": 10}, "model.depth"), ({"depth": 8.0}, "model.depth"),
     ({"alpha": 0}, "model.alpha"), ({"alpha": True}, "model.alpha"),
     ({"skipinit": 1}, "model.skipinit")],
)  # fmt: skip
def test_nf_resnet_bad_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        nf(**kwargs)
    assert info.value.key == key


def test_betas_follow_the_expected_variance_and_reset_at_transitions() -> None:
    alpha = 0.2
    model = nf(depth=20, alpha=alpha)  # 3 stages x 3 blocks
    betas = [b.beta for stage in model.stages for b in stage]
    var = [1.0, 1 + alpha**2, 1 + 2 * alpha**2]  # stage 1: stem var 1, identity shortcuts
    var += [1 + 3 * alpha**2, 1 + alpha**2, 1 + 2 * alpha**2]  # reset after each transition
    var += [1 + 3 * alpha**2, 1 + alpha**2, 1 + 2 * alpha**2]
    assert betas == pytest.approx([1 / math.sqrt(v) for v in var], rel=1e-12)
    assert expected_stds(3, 3, alpha) == pytest.approx([math.sqrt(v) for v in var], rel=1e-12)
    transitions = [b.is_transition for stage in model.stages for b in stage]
    assert transitions == [False, False, False, True, False, False, True, False, False]


def test_measured_block_input_variance_matches_beta() -> None:
    # The point of beta: at init, h_i / beta_i has unit variance (channel variance, N(0,1) input).
    torch.manual_seed(0)
    model = nf(depth=56)
    seen: list[tuple[float, float]] = []
    hooks = [
        b.register_forward_pre_hook(lambda m, a: seen.append((m.beta, channel_stats(a[0])[1])))
        for stage in model.stages
        for b in stage
    ]
    with torch.no_grad():
        model(torch.randn(32, 3, 32, 32))
    for h in hooks:
        h.remove()
    ratios = [var * beta**2 for beta, var in seen]
    assert len(ratios) == 27 and all(0.7 < r < 1.4 for r in ratios), ratios


def test_residual_block_formula_and_skipinit() -> None:
    torch.manual_seed(0)
    block = NFBasicBlock(16, 16, 1, alpha=0.3, beta=0.5, skipinit=False)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        f = block.conv2(block.act(block.conv1(block.act(x) * 0.5)))
        torch.testing.assert_close(block(x), x + 0.3 * f)
    zero = NFBasicBlock(16, 32, 2, alpha=0.2, beta=1.0, skipinit=True)
    with torch.no_grad():  # skip gain 0: only the shortcut, a Scaled-WS conv of relu(x) * beta
        torch.testing.assert_close(zero(x), zero.shortcut(zero.act(x)))
    assert nf(skipinit=True)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- AGC
def agc_reference(w: torch.Tensor, g: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    """Eq. 3 of Brock et al. 2021b, written unit by unit (row/output channel; whole vectors)."""
    if w.ndim <= 1:
        ratio = g.norm() / max(w.norm().item(), eps)
        return g * (lam / ratio) if ratio > lam else g.clone()
    out = g.clone()
    for i in range(w.shape[0]):
        wn = max(w[i].norm().item(), eps)
        gn = g[i].norm().item()
        if gn / wn > lam:
            out[i] = g[i] * (lam * wn / gn)
    return out


def _param(shape: tuple[int, ...], seed: int, g_scale: float) -> nn.Parameter:
    gen = torch.Generator().manual_seed(seed)
    p = nn.Parameter(torch.randn(shape, generator=gen))
    p.grad = torch.randn(shape, generator=gen) * g_scale
    return p


@pytest.mark.parametrize("shape", [(6, 3, 3, 3), (10, 7), (5,), ()])
def test_agc_matches_the_formula(shape: tuple[int, ...]) -> None:
    for seed, scale in ((0, 0.001), (1, 0.05), (2, 10.0)):
        p = _param(shape, seed, scale)
        expected = agc_reference(p.detach(), p.grad, 0.01, 1e-3)
        adaptive_clip_([p], 0.01, 1e-3)
        torch.testing.assert_close(p.grad, expected)
        if p.ndim > 1:  # no unit above lambda afterwards
            ratio = unitwise_norm(p.grad) / unitwise_norm(p.detach()).clamp(min=1e-3)
            assert (ratio <= 0.01 * (1 + 1e-5)).all()


def test_agc_eps_lets_zero_weights_move() -> None:
    p = nn.Parameter(torch.zeros(4, 3))
    p.grad = torch.ones(4, 3)
    adaptive_clip_([p], 0.01, 1e-3)
    torch.testing.assert_close(unitwise_norm(p.grad).flatten(), torch.full((4,), 1e-5))


def test_agc_matches_timm() -> None:
    timm_agc = pytest.importorskip("timm.utils.agc")
    ours = [_param(s, i, 1.0) for i, s in enumerate([(6, 3, 3, 3), (10, 7), (5,)])]
    theirs = [_param(s, i, 1.0) for i, s in enumerate([(6, 3, 3, 3), (10, 7), (5,)])]
    adaptive_clip_(ours, 0.02, 1e-3)
    timm_agc.adaptive_clip_grad(theirs, clip_factor=0.02, eps=1e-3)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_agc_callback_leaves_the_final_linear_layer_out() -> None:
    model = nf()
    names = {id(p): n for n, p in model.named_parameters()}
    clipped = {names[id(p)] for p in agc(model).params}
    assert clipped == set(names.values()) - {"fc.weight", "fc.bias"}
    assert len(agc(model, exclude=[]).params) == len(names)
    only = agc(model, exclude=["fc.*", "stem.*"]).params
    assert {names[id(p)] for p in only} == clipped - {"stem.weight", "stem.bias", "stem.gain"}


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"clipping": 0}, "callbacks.agc.clipping"), ({"eps": -1.0}, "callbacks.agc.eps"),
     ({"clipping": "x"}, "callbacks.agc.clipping"), ({"exclude": "fc.*"}, "callbacks.agc.exclude"),
     ({"exclude": ["nope.*"]}, "callbacks.agc.exclude")],
)  # fmt: skip
def test_agc_bad_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        agc(nf(), **kwargs)
    assert info.value.key == key


def test_agc_callback_clips_and_counts_and_resumes() -> None:
    model = nf()
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().mul(100).backward()
    expected = {n: agc_reference(p.detach(), p.grad, 0.01, 1e-3) for n, p in
                model.named_parameters() if not n.startswith("fc.")}  # fmt: skip
    cb = agc(model)
    cb.after_backward(None, 1)  # type: ignore[arg-type]
    for n, p in model.named_parameters():
        if n in expected:
            torch.testing.assert_close(p.grad, expected[n])
    state = cb.state_dict()
    assert 0 < state["clipped"] <= state["total"]
    again = agc(model)
    again.load_state_dict(state)
    row: dict = {}
    again.end_epoch(None, 1, row)  # type: ignore[arg-type]
    assert row["agc_clipped_units"] == state["clipped"] / state["total"]


def test_clip_norm_is_global_norm_clipping() -> None:
    model = nn.Linear(5, 3)
    model(torch.randn(8, 5)).pow(2).sum().mul(50).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    total = math.sqrt(sum(g.pow(2).sum().item() for g in grads))
    assert total > 1.0
    cb = clip_norm(model, max_norm=1.0)
    cb.after_backward(None, 1)  # type: ignore[arg-type]
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g / total, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match=r"^callbacks\.clip_norm\.max_norm=0:"):
        clip_norm(model, max_norm=0)


# ---------------------------------------------------------------- signal propagation
@pytest.mark.parametrize("name", list(MODELS))
def test_spp_runs_on_every_registry_model(name: str) -> None:
    from test_models import SMALL

    norm = no_norm() if name == "nf_resnet" else batch_norm()
    image = 28 if name == "lenet5" else 32
    model = create_model(name, num_classes=10, in_channels=3, image_size=image,
                         norm_layer=norm, **SMALL[name])  # fmt: skip
    blocks = residual_blocks(model)
    assert blocks
    df = signal_propagation(model, torch.randn(4, 3, image, image))
    assert len(df) >= len(blocks) and (df["avg_var"] >= 0).all()


def test_channel_stats_definition() -> None:
    x = torch.randn(4, 3, 5, 5) + torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    sq, var = channel_stats(x)
    per = x.transpose(0, 1).reshape(3, -1).double()
    assert sq == pytest.approx(per.mean(1).pow(2).mean().item())
    assert var == pytest.approx(per.var(1, unbiased=False).mean().item())


def test_spp_unnormalized_mean_grows_bn_and_nf_stay_bounded() -> None:
    df = measure(depth=20, batch=16)
    last = df.groupby("variant").tail(1).set_index("variant")["avg_sq_mean"]
    first = df.groupby("variant").head(1).set_index("variant")["avg_sq_mean"]
    assert last["ResNet, no normalization"] / first["ResNet, no normalization"] > 10
    assert df[df["variant"] == "NF-ResNet"]["avg_sq_mean"].max() < 0.1
    assert df[df["variant"] == "BN-ResNet"]["avg_sq_mean"].max() < 10


# ---------------------------------------------------------------- the claims (experiment)
def nf_results(rows: list[tuple[str, int, float, int, str, float, float]], tmp_path) -> object:
    """A Results of final epochs: (cell, batch, lr, seed, status, test_acc, train_loss)."""
    import pandas as pd

    from trainrepro.reproduce.paper import Results
    from trainrepro.reproduce.papers.nfnet import PAPER

    df = pd.DataFrame(
        [{"run_dir": f"{c}/b{b}/lr{lr:g}/seed{s}", "preset": c, "status": st, "epoch": 6,
          "test_acc": acc, "train_loss": loss, "seed": s, "grid_batch": b, "grid_lr": lr,
          "agc_clipped_units": 0.5 if "agc" in c else math.nan}
         for c, b, lr, s, st, acc, loss in rows]
    )  # fmt: skip
    return Results(PAPER, "quick", "nfnet-quick", df, None, tmp_path, "synthetic")


def test_nf_claims_pair_runs_by_seed(tmp_path) -> None:
    from trainrepro.reproduce.papers import nfnet

    rows = [("bn_resnet", 128, 0.1, s, "completed", 40.0 + s, 1.5) for s in (0, 1, 2)]
    rows += [("nf_resnet", 128, 0.1, s, "completed", 39.0 + 2 * s, 1.6) for s in (0, 1, 2)]
    rows += [("nf_resnet_agc", 128, 0.1, s, "completed", 38.0, 1.7) for s in (0, 1)]
    rows += [("nf_resnet_agc", 128, 0.1, 2, "diverged", math.nan, math.nan)]
    res = nf_results(rows, tmp_path)
    assert nfnet.measure_nf_matches_bn(res).values == (-1.0, 0.0, 1.0)
    agc = nfnet.measure_agc_small_batch(res)
    assert agc.values == (-1.0, -3.0, nfnet.CHANCE - 43.0)  # a diverged run counts as chance
    assert "diverged" in agc.detail and "50% of units" in agc.detail
    assert nfnet.measure_agc_threshold(res).status == "not run"  # no λ sweep in these runs


def test_agc_threshold_is_the_slope_per_doubling_per_seed(tmp_path) -> None:
    from trainrepro.reproduce.papers import nfnet

    rows = []
    for s, slope in ((0, 1.0), (1, -0.5), (2, 0.25)):
        for clip, x in ((0.01, 0), (0.04, 2), (0.16, 4)):
            cell = "nf_resnet_agc" if clip == 0.01 else f"nf_resnet_agc_clip{clip:g}"
            rows.append((cell, 128, 0.1, s, "completed", 30.0 + slope * x, 1.7))
    got = nfnet.measure_agc_threshold(nf_results(rows, tmp_path))
    assert got.values == pytest.approx((1.0, -0.5, 0.25))


def test_agc_stability_counts_stable_lrs_per_seed(tmp_path) -> None:
    from trainrepro.reproduce.papers import nfnet

    rows = []
    for s in (0, 1):
        for lr in (0.4, 1.6, 6.4):
            nf_ok = lr == 0.4 or (s == 1 and lr == 1.6)
            rows.append(("nf_resnet", 512, lr, s, "completed" if nf_ok else "diverged", 30.0,
                         1.9 if nf_ok else math.nan))  # fmt: skip
            rows.append(("nf_resnet_agc", 512, lr, s, "completed", 30.0, 1.9 if lr < 6 else 2.4))
    got = nfnet.measure_agc_stability(nf_results(rows, tmp_path))
    assert got.values == (1.0, 0.0)  # AGC: 2 stable (ln 10 < 2.4 at 6.4); NF: 1, then 2


def test_committed_nfnet_quick_verdicts() -> None:
    """The committed report's numbers: the quick profile run at seeds 0-2 (all 40 runs), so
    every claim is decided by its interval over three seeds."""
    import json

    from support import REPO

    record = json.loads((REPO / "results/nfnet-quick/verdicts.json").read_text())
    got = {c["key"]: (c["status"], c["n"], c["mean"]) for c in record["claims"]}
    assert got["nf_matches_bn"] == ("fail", 3, pytest.approx(-6.80, abs=0.01))
    assert got["agc_small_batch"] == ("fail", 3, pytest.approx(-5.07, abs=0.01))
    assert got["agc_threshold"] == ("fail", 3, pytest.approx(0.75, abs=0.01))
    assert got["agc_stability"] == ("pass", 3, 2.0)
    assert got["signal_propagation"][:2] == ("pass", 3)
    assert got["signal_propagation_bounded"][:2] == ("pass", 3)
    assert got["signal_propagation_bounded"][2] == pytest.approx(0.60, abs=0.01)

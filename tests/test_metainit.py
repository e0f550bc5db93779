"""MetaInit (trainrepro.instruments.metainit) against Dauphin & Schoenholz (2019)'s definitions."""

from __future__ import annotations

import pytest
import torch
from support import tiny_cfg
from torch import nn

from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.instruments.metainit import build_metainit, gradient_quotient, metainit


def test_gradient_quotient_matches_a_hand_computation():
    # L(w, b) = (w^2 x + b)^2 / 2 at w = 1.5, b = 0.5, x = 2: g and Hg by hand.
    w = torch.tensor([[1.5]], requires_grad=True)
    b = torch.tensor([0.5], requires_grad=True)
    x = 2.0
    loss = ((w**2 * x + b) ** 2 / 2).sum()
    eps = 1e-5
    r = 1.5**2 * 2 + 0.5  # the residual, 5.0
    gw, gb = r * 2 * 1.5 * x, r  # dL/dw = r * 2wx, dL/db = r
    # H = [[d2L/dw2, d2L/dwdb], [., d2L/db2]] = [[(2wx)^2 + r*2x, 2wx], [2wx, 1]]
    hww, hwb, hbb = (2 * 1.5 * x) ** 2 + r * 2 * x, 2 * 1.5 * x, 1.0
    hg_w, hg_b = hww * gw + hwb * gb, hwb * gw + hbb * gb
    expected = (abs((gw - hg_w) / (gw + eps) - 1) + abs((gb - hg_b) / (gb + eps) - 1)) / 2
    got = gradient_quotient(loss, [w, b], eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Differentiable, as MetaInit needs.
    (dw,) = torch.autograd.grad(got, [w])
    assert torch.isfinite(dw).all()


def test_gradient_quotient_sign_damping_uses_plus_eps_at_zero_gradient():
    # A parameter the loss ignores has g = Hg = 0: the term is |0 / eps - 1| = 1.
    w = torch.tensor([2.0], requires_grad=True)
    unused = torch.tensor([1.0], requires_grad=True)
    loss = (w**2).sum()
    got = gradient_quotient(loss, [w, unused], eps=1e-5)
    g, hg = 4.0, 2 * 4.0  # L = w^2: g = 2w = 4, Hg = 2 g = 8
    assert got.item() == pytest.approx((abs((g - hg) / (g + 1e-5) - 1) + 1.0) / 2, rel=1e-6)


def _net(scale: float, depth: int = 6) -> nn.Module:
    """A plain ReLU MLP (no normalization) whose weights are ``scale`` times torch's init."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(16, 32), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(32, 4))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return net


def test_only_norms_change_and_gq_decreases_on_a_badly_scaled_net():
    net = _net(3.0)  # activations grow ~3x per layer: far from locally linear (GQ ~ 70)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    record = metainit(net, input_shape=(1, 4, 4), num_classes=4, seed=0, steps=100, lr=0.1)
    assert record["gq_after"] < 0.1 * record["gq_before"]
    assert record["steps_run"] == 100 and record["tuned_tensors"] == 6
    changed = 0
    for name, p in net.named_parameters():
        old = before[name]
        if p.dim() < 2:
            assert torch.equal(p, old), f"{name}: a 1-D parameter moved"
            continue
        cos = torch.nn.functional.cosine_similarity(p.flatten(), old.flatten(), dim=0)
        assert cos.item() == pytest.approx(1.0, abs=1e-6), f"{name}: direction changed"
        changed += not torch.isclose(p.norm(), old.norm())
    assert changed > 0


def test_metainit_is_reproducible_and_leaves_the_global_rng_alone():
    a, b = _net(3.0), _net(3.0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ra = metainit(a, input_shape=(16,), num_classes=4, seed=5, steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    rb = metainit(b, input_shape=(16,), num_classes=4, seed=5, steps=5)
    assert ra == rb
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("key", "value"), [("steps", -1), ("lr", 0.0), ("momentum", 1.0), ("eps", -1e-5),
                       ("batch_size", 0), ("log_every", -2)]
)  # fmt: skip
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"init.{key}="):
        build_metainit(**{key: value})


@pytest.mark.parametrize("norm", ["bn", "none", "gn"])
def test_plus_init_metainit_in_a_run_notes_gq_and_is_skipped_on_resume(norm, tmp_path):
    overrides = ("+init=metainit", "init.steps=3", f"normalization={norm}", "epochs=2")
    if norm == "gn":
        overrides += ("normalization.groups=1",)
    first = train(tiny_cfg(*overrides), tmp_path / "run", stop_after_epoch=1)
    assert first["status"] == "interrupted"
    note = next(n for n in first["notes"] if n.startswith("init=metainit"))
    assert "gradient quotient" in note and "after 3 steps" in note
    summary = train(tiny_cfg(*overrides, "resume=true"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert any("skipped on resume" in n for n in summary["notes"])


def test_metainit_changes_the_run_only_through_the_weights(tmp_path):
    # Same seed, init.steps=0: the weights are untouched, so the run equals a plain one.
    plain = train(tiny_cfg("epochs=1"), tmp_path / "plain")
    zero = train(tiny_cfg("epochs=1", "+init=metainit", "init.steps=0"), tmp_path / "zero")
    assert plain["final"]["train_loss"] == zero["final"]["train_loss"]


def test_probe_script_reports_before_and_after(tmp_path):
    """scripts/metainit_probe.py: the run's model before and after MetaInit, on a data batch."""
    import json
    import subprocess
    import sys

    from support import REPO, TINY

    out = tmp_path / "probe.json"
    args = [*TINY, "+init=metainit", "init.steps=2", "init.log_every=0"]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/metainit_probe.py"), *args, "--batch", "16",
         "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gradient quotient" in result.stdout and "after 2 steps" in result.stdout
    record = json.loads(out.read_text())
    assert record["metainit"]["steps_run"] == 2
    assert record["before"]["norms"].keys() == record["after"]["norms"].keys()
    assert record["before"]["norms"] != record["after"]["norms"]  # MetaInit moved the norms
    no_init = subprocess.run([sys.executable, str(REPO / "scripts/metainit_probe.py"), *TINY],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert no_init.returncode == 2 and "+init=metainit" in no_init.stderr

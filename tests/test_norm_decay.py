"""Weight decay of norm scales towards 1 (optimizer.norm_decay_target), against the formulas:
coupled g += wd * (gamma - t), decoupled gamma -= lr * wd * (gamma - t)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.optim.factory import create_optimizer

WD, LR, TARGET = 0.1, 0.05, 1.0


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten())
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _grads(model: nn.Module, step: int) -> None:
    torch.manual_seed(100 + step)
    x = torch.randn(4, 3, 5, 5)
    model.zero_grad()
    (model(x) ** 2).mean().backward()


def _reference(name: str, decoupled: bool, steps: int = 3) -> nn.Module:
    """The formula written out: zero decay for gamma in torch, ours applied by hand."""
    model = _model()
    gamma = model[1].weight
    others = [p for p in model.parameters() if p is not gamma]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    if decoupled:
        cls = torch.optim.AdamW
    extra = {"momentum": 0.9} if name == "sgd" else {}
    opt = cls(
        [{"params": others, "weight_decay": WD}, {"params": [gamma], "weight_decay": 0.0}],
        lr=LR,
        **extra,
    )
    for step in range(steps):
        _grads(model, step)
        with torch.no_grad():
            if decoupled:
                gamma.sub_(LR * WD * (gamma - TARGET))
            else:
                gamma.grad.add_(WD * (gamma - TARGET))
        opt.step()
    return model


@pytest.mark.parametrize(
    ("name", "kwargs", "decoupled"),
    [
        ("sgd", {"momentum": 0.9}, False),
        ("adam", {}, False),
        ("adam", {"decoupled_weight_decay": True}, True),
        ("adamw", {}, True),
    ],
)
def test_gamma_decays_towards_one(name: str, kwargs: dict, decoupled: bool) -> None:
    model = _model()
    opt = create_optimizer(name, model, lr=LR, weight_decay=WD, norm_decay_target=TARGET, **kwargs)
    assert {g["group"] for g in opt.param_groups} == {"decay", "norm_scale"}
    for step in range(3):
        _grads(model, step)
        opt.step()
    expected = _reference(name, decoupled)
    for (key, got), want in zip(
        model.state_dict().items(), expected.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=key)


def test_target_zero_is_the_plain_optimizer() -> None:
    a, b = _model(), _model()
    opt_a = create_optimizer("sgd", a, lr=LR, weight_decay=WD, norm_decay_target=0.0)
    opt_b = torch.optim.SGD(b.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    for step in range(2):
        _grads(a, step), _grads(b, step)
        opt_a.step(), opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_state_dict_round_trip_keeps_the_target() -> None:
    model = _model()
    opt = create_optimizer("sgd", model, weight_decay=WD, norm_decay_target=TARGET)
    _grads(model, 0)
    opt.step()
    fresh = create_optimizer("sgd", copy.deepcopy(model), weight_decay=WD, norm_decay_target=TARGET)
    fresh.load_state_dict(opt.state_dict())
    assert [g.get("decay_target") for g in fresh.param_groups] == [None, TARGET]


def test_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^optimizer\.norm_decay_target=1: needs decay_norm"):
        create_optimizer("sgd", _model(), norm_decay_target=1, decay_norm_and_bias=False)
    with pytest.raises(ConfigError, match=r"^optimizer\.norm_decay_target=1\.0: the model has no"):
        create_optimizer("sgd", nn.Linear(2, 2), norm_decay_target=1)
    with pytest.raises(ConfigError, match=r"^optimizer\.norm_decay_target=\[1\]: unknown key"):
        create_optimizer("radam", _model(), norm_decay_target=1)
    with pytest.raises(ConfigError, match=r"^optimizer\.norm_decay_target=x: must be a finite"):
        create_optimizer("adamw", _model(), norm_decay_target="x")


@pytest.mark.parametrize("normalization", ["bn", "gn"])
def test_a_run_builds_and_trains_with_a_target(tmp_path, normalization: str) -> None:
    """Through the trainer (build_run validates the optimizer on a stand-in model first: it once
    had no norm layer, so every run with a non-zero target was refused)."""
    from support import tiny_cfg

    from trainrepro.engine.train import train

    cfg = tiny_cfg(f"normalization={normalization}", "optimizer.decay_norm_and_bias=true",
                   "optimizer.norm_decay_target=1", "epochs=1")  # fmt: skip
    assert train(cfg, tmp_path)["status"] == "completed"

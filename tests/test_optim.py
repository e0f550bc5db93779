"""Optimizer builders: every conf/optimizer option trains, validates and documents itself."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from support import tiny_model
from torch import nn

from trainrepro.config import instantiate, resolve_target
from trainrepro.errors import ConfigError
from trainrepro.optim import factory as optim
from trainrepro.optim.update_rules import update_rule_for

CONF = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
YAMLS = sorted(CONF.glob("*.yaml"))
# Options whose defaults do not move the weights in 30 steps (Adam-2k estimates v for 2000).
SMALL = {"adam_2k": {"k": 5}}


def optimizer_node(path: Path):
    """The option's optimizer node; a ``# @package _global_`` file holds it under optimizer."""
    node = OmegaConf.load(path)
    return node.optimizer if path.read_text().startswith("# @package _global_") else node


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)


def loss_of(model: nn.Module) -> torch.Tensor:
    x, y = batch()
    return nn.functional.cross_entropy(model(x), y)


class OneBatch:
    """The whole training set is batch(): what SVRG's full-gradient pass reads."""

    def __len__(self) -> int:
        return 16

    def batches(self, epoch: int, batch_size: int, **kwargs):
        yield batch()


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """Steps as the trainer takes them: the optimizer's update rule fills the gradients."""
    run = SimpleNamespace(
        model=model, optimizer=opt, scaler=None, autocast_dtype=None, train_loader=OneBatch()
    )
    rule = update_rule_for(opt, model)
    rule.start_epoch(run, 0, 16)
    for _ in range(steps):
        opt.zero_grad()
        rule.gradients(run, *batch(), None)
        opt.step()


def test_every_option_is_registered() -> None:
    assert {p.stem for p in YAMLS} == set(optim.optimizers())


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_documents_and_matches_builder(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# ")
    node = optimizer_node(path)
    assert node.name == path.stem
    fn = optim.optimizers()[path.stem]
    assert resolve_target(node._target_, "optimizer._target_") is fn
    params = inspect.signature(fn).parameters
    keys = {k for k in node if k not in ("name", "_target_")}
    assert keys == set(params) - {"model"}, "YAML must list every builder key"
    for key in keys:
        default = params[key].default
        default = list(default) if isinstance(default, tuple) else default
        assert OmegaConf.to_container(node)[key] == default, key
        assert f"#   {key} " in text, f"{key} is not explained in the header"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_option_trains(path: Path) -> None:
    model = tiny_model()
    node = OmegaConf.merge(optimizer_node(path), SMALL.get(path.stem, {}))
    opt = instantiate("optimizer", node, model)
    assert isinstance(opt, torch.optim.Optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        start = loss_of(model).item()
    train(model, opt, 30)
    with torch.no_grad():
        end = loss_of(model).item()
    assert end < start
    # Every parameter moves, except a bias right before batch norm, whose gradient is zero
    # (the norm removes the mean): with no weight decay (svrg, storm) nothing moves it.
    bias_before_bn = model[0].bias
    assert all(
        not torch.equal(a, b)
        for a, b in zip(before, model.parameters(), strict=True)
        if b is not bias_before_bn
    )


DECAYING = sorted(
    name
    for name, fn in optim.optimizers().items()
    if "decay_norm_and_bias" in inspect.signature(fn).parameters
)


def test_only_storm_has_no_weight_decay_switch() -> None:
    assert set(optim.optimizers()) - set(DECAYING) == {"storm"}  # the paper has no decay


@pytest.mark.parametrize("name", DECAYING)
def test_decay_norm_and_bias_false_splits_exactly_the_1d_params(name: str) -> None:
    model = tiny_model()
    frozen = model[4].bias
    frozen.requires_grad_(False)
    opt = optim.create_optimizer(name, model, weight_decay=0.1, decay_norm_and_bias=False)
    groups = {g["group"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    ids = {k: {id(p) for p in g["params"]} for k, g in groups.items()}
    assert ids["decay"] == {id(model[0].weight), id(model[4].weight)}
    assert ids["no_decay"] == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    # sgdw scales its decay by lr_t / lr: its groups hold weight_decay / lr (optim/decoupled.py)
    per_lr = 1 / opt.defaults["lr"] if name == "sgdw" else 1.0
    assert groups["decay"]["weight_decay"] == pytest.approx(0.1 * per_lr)
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_default_groups_decay_everything_trainable() -> None:
    model = tiny_model()
    model[1].weight.requires_grad_(False)
    (group,) = optim.param_groups(model, 5e-4, decay_norm_and_bias=True)
    assert group["weight_decay"] == 5e-4
    assert {id(p) for p in group["params"]} == {
        id(p) for p in model.parameters() if p is not model[1].weight
    }


def test_no_trainable_parameters() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        optim.sgd(model)


def _one_step(name: str, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    p0 = model.weight.detach().clone()
    opt = optim.create_optimizer(name, model, **kwargs)
    loss = model(torch.randn(8, 5)).square().mean()
    loss.backward()
    grad = model.weight.grad.detach().clone()
    opt.step()
    return p0, grad, model.weight.detach()


def test_adamw_decay_is_decoupled() -> None:
    lr, wd, eps = 0.01, 0.5, 1e-8
    p0, g, p1 = _one_step("adamw", lr=lr, weight_decay=wd, eps=eps)
    # First Adam step: m_hat = g, v_hat = g**2; decay multiplies the weight, outside the ratio.
    expected = p0 * (1 - lr * wd) - lr * g / (g.abs() + eps)
    torch.testing.assert_close(p1, expected)


def test_adam_decay_is_l2_on_the_gradient() -> None:
    lr, wd, eps = 0.01, 0.5, 1e-8
    p0, g, p1 = _one_step("adam", lr=lr, weight_decay=wd, eps=eps)
    g_l2 = g + wd * p0
    torch.testing.assert_close(p1, p0 - lr * g_l2 / (g_l2.abs() + eps))


def test_sgd_step_formula() -> None:
    p0, g, p1 = _one_step("sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    torch.testing.assert_close(p1, p0 - 0.1 * (g + 0.01 * p0))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sgd", {}), ("adam", {}), ("rmsprop", {"momentum": 0.5}), ("nadam", {}), ("adamax", {})],
)
def test_momentum_round_trip(name: str, kwargs: dict[str, float]) -> None:
    opt = optim.create_optimizer(name, tiny_model(), **kwargs)
    assert optim.get_momentum(opt) is not None
    optim.set_momentum(opt, 0.85)
    assert optim.get_momentum(opt) == 0.85
    assert all((g["betas"][0] if "betas" in g else g["momentum"]) == 0.85 for g in opt.param_groups)
    if "betas" in opt.param_groups[0]:
        assert opt.param_groups[0]["betas"][1] == 0.999


@pytest.mark.parametrize("name", ["adagrad", "adadelta"])
def test_momentum_is_none_without_momentum(name: str) -> None:
    opt = optim.create_optimizer(name, tiny_model())
    assert optim.get_momentum(opt) is None
    before = [dict(g) for g in opt.param_groups]
    optim.set_momentum(opt, 0.9)
    assert [dict(g) for g in opt.param_groups] == before


def test_rmsprop_momentum_can_be_switched_on_mid_run() -> None:
    model = tiny_model()
    opt = optim.rmsprop(model, momentum=0.0)
    train(model, opt, 2)
    optim.set_momentum(opt, 0.9)
    train(model, opt, 2)  # torch alone would raise KeyError: 'momentum_buffer'


def test_set_lr() -> None:
    opt = optim.sgd(tiny_model(), decay_norm_and_bias=False)
    optim.set_lr(opt, 0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    optim.set_lr(opt, 0.05)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]
    with pytest.raises(ConfigError):
        optim.set_lr(opt, -1.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("sgd", {"lr": 0.0}, "optimizer.lr"),
        ("adam", {"lr": -1e-3}, "optimizer.lr"),
        ("sgd", {"lr": "fast"}, "optimizer.lr"),
        ("sgd", {"lr": float("nan")}, "optimizer.lr"),
        ("sgd", {"momentum": 1.0}, "optimizer.momentum"),
        ("sgd", {"momentum": -0.1}, "optimizer.momentum"),
        ("rmsprop", {"momentum": 1.5}, "optimizer.momentum"),
        ("sgd", {"dampening": 1.0}, "optimizer.dampening"),
        ("sgd", {"nesterov": True, "momentum": 0.0}, "optimizer.nesterov"),
        ("sgd", {"nesterov": True, "dampening": 0.1}, "optimizer.nesterov"),
        ("sgd", {"weight_decay": -5e-4}, "optimizer.weight_decay"),
        ("adamw", {"weight_decay": -0.01}, "optimizer.weight_decay"),
        ("adam", {"betas": [0.9, 1.0]}, "optimizer.betas"),
        ("adam", {"betas": [-0.1, 0.999]}, "optimizer.betas"),
        ("adamax", {"betas": [0.9]}, "optimizer.betas"),
        ("radam", {"betas": 0.9}, "optimizer.betas"),
        ("adam", {"eps": 0.0}, "optimizer.eps"),
        ("adam", {"amsgrad": "yes"}, "optimizer.amsgrad"),
        ("nadam", {"momentum_decay": -1.0}, "optimizer.momentum_decay"),
        ("adagrad", {"lr_decay": -1.0}, "optimizer.lr_decay"),
        ("adagrad", {"initial_accumulator_value": -1.0}, "optimizer.initial_accumulator_value"),
        ("rmsprop", {"alpha": 1.0}, "optimizer.alpha"),
        ("adadelta", {"rho": 1.0}, "optimizer.rho"),
        ("sgd", {"decay_norm_and_bias": "no"}, "optimizer.decay_norm_and_bias"),
    ],
)
def test_bad_values_name_their_key(name: str, kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        optim.create_optimizer(name, tiny_model(), **kwargs)
    assert info.value.key == key


def test_lr_message_matches_spec() -> None:
    with pytest.raises(ConfigError, match=r"^optimizer\.lr=0: must be > 0$"):
        optim.sgd(tiny_model(), lr=0)


def test_create_optimizer_rejects_unknown_name_and_keys() -> None:
    with pytest.raises(ConfigError, match="unknown; valid: adadelta, adagrad") as info:
        optim.create_optimizer("lion", tiny_model())
    assert info.value.key == "optimizer"
    with pytest.raises(ConfigError) as info:
        optim.create_optimizer("sgd", tiny_model(), betas=[0.9, 0.99])
    assert info.value.key == "optimizer.betas"

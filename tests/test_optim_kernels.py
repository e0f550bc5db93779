"""torch's multi-tensor (foreach) and fused optimizer kernels compute our options' updates.

The options that wrap a torch class leave ``foreach`` to torch, which runs it when every
parameter is on CUDA, and pass ``optimizer.fused`` through where torch has a fused kernel
(sgd, adam and its variants, adamw, adagrad). Each kernel is compared, step by step, with
torch's per-parameter loop (``foreach=False``) over 20 updates of a small model whose lr
(warmup, then cosine) and momentum change every update, both fed the same gradients.

Tolerance: float32 rounding, ``rtol=1e-6`` (8 ulps) and ``atol=1e-7`` (one ulp at 1, for
values that cross 0). Measured on the CPU: foreach equals the loop bit for bit except NAdam's
(2e-8 apart); fused differs by at most 1e-8. Our own optimizers (radam, adam_2k, lars, lamb,
storm) loop over the parameters and have no such switch.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.optim import factory as optim

STEPS = 20
TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    ),
]
# Each torch-backed option, with keys that take its step's other branches.
TORCH_BACKED = {
    "sgd": {"nesterov": True, "weight_decay": 1e-2, "norm_decay_target": 1.0},
    "adam": {"amsgrad": True, "weight_decay": 1e-2},
    "adam_eps": {"decoupled_weight_decay": True, "weight_decay": 1e-2},
    "adamw": {"norm_decay_target": 1.0},
    "nadam": {"weight_decay": 1e-2},
    "adagrad": {"weight_decay": 1e-3, "lr_decay": 0.01},
    "rmsprop": {"momentum": 0.9, "centered": True},
    "adadelta": {},
    "adamax": {},
    "svrg": {"momentum": 0.9},  # its step is torch's SGD
}
FUSED = sorted(
    name
    for name, builder in optim.optimizers().items()
    if "fused" in inspect.signature(builder).parameters
)


def test_fused_is_offered_where_torch_has_a_fused_kernel() -> None:
    assert FUSED == ["adagrad", "adam", "adam_eps", "adam_warmup", "adamw", "sgd"]
    for name in FUSED:
        assert inspect.signature(optim.optimizers()[name]).parameters["fused"].default is None


def model(device: str) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 5),
    )
    return net.to(device)


def batch(step: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(32, 3, 6, 6, generator=g), torch.randint(0, 5, (32,), generator=g)
    return x.to(device), y.to(device)


def schedule(step: int) -> tuple[float, float]:
    """The lr factor (5 updates of warmup, then cosine) and the momentum at ``step``."""
    lr = min(1.0, (step + 1) / 5) * 0.5 * (1 + math.cos(math.pi * step / STEPS))
    return lr, 0.85 + 0.1 * step / STEPS


def compare(name: str, kwargs: dict, device: str, kernel: str) -> None:
    """Train a model with torch's loop and a copy with ``kernel``, the same gradients fed to
    both; the copy's parameters must match after every update."""
    loop_model, kernel_model = model(device), model(device)
    loop = optim.create_optimizer(name, loop_model, **kwargs)
    fused = {"fused": True} if kernel == "fused" else {}
    other = optim.create_optimizer(name, kernel_model, **kwargs, **fused)
    for group in loop.param_groups:
        group["foreach"] = False
    for group in other.param_groups:
        group["foreach"] = kernel == "foreach"
    base_lr = loop.defaults["lr"]
    for step in range(STEPS):
        lr, momentum = schedule(step)
        for opt in (loop, other):
            optim.set_lr(opt, base_lr * lr)
            if optim.get_momentum(opt) is not None:
                optim.set_momentum(opt, momentum)
            opt.zero_grad(set_to_none=True)
        x, y = batch(step, device)
        nn.functional.cross_entropy(loop_model(x), y).backward()
        for p, q in zip(loop_model.parameters(), kernel_model.parameters(), strict=True):
            q.grad = p.grad.clone()
        loop.step()
        other.step()
        for p, q in zip(loop_model.parameters(), kernel_model.parameters(), strict=True):
            torch.testing.assert_close(q, p, **TOLERANCE, msg=lambda m, t=step: f"update {t}: {m}")
    assert not torch.equal(loop_model[4].weight, model(device)[4].weight)  # it trained


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(TORCH_BACKED))
def test_the_foreach_step_equals_the_loop(name: str, device: str) -> None:
    compare(name, TORCH_BACKED[name], device, "foreach")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [n for n in FUSED if n != "adam_warmup"])  # adam's builder
def test_the_fused_step_equals_the_loop(name: str, device: str) -> None:
    compare(name, TORCH_BACKED[name], device, "fused")


@pytest.mark.parametrize("name", FUSED)
def test_fused_reaches_torch_and_its_default_is_torchs(name: str) -> None:
    assert all(g["fused"] is None for g in optim.create_optimizer(name, model("cpu")).param_groups)
    opt = optim.create_optimizer(name, model("cpu"), fused=True)
    assert all(g["fused"] is True for g in opt.param_groups)
    assert opt._step_supports_amp_scaling  # fp16's GradScaler hands it the scale: no host read


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_fused_must_be_a_boolean_or_null(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^optimizer\.fused=.*: must be true, false or null"):
        optim.create_optimizer("sgd", model("cpu"), fused=value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(TORCH_BACKED))
def test_torch_picks_foreach_on_cuda_and_the_loop_on_cpu(name: str, device: str) -> None:
    from torch.optim.optimizer import _default_to_fused_or_foreach  # torch's own choice

    opt = optim.create_optimizer(name, model(device), **TORCH_BACKED[name])
    params = [p for g in opt.param_groups for p in g["params"]]
    assert all(g["foreach"] is None for g in opt.param_groups)  # left to torch
    fused, foreach = _default_to_fused_or_foreach(params, differentiable=False)
    assert (fused, foreach) == (False, device == "cuda")

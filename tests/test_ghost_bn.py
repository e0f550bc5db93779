"""Ghost batch norm (Hoffer et al. 2017): per-ghost-batch BN, sequential running statistics,
and gradient accumulation over micro-batches equal to the whole batch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from trainrepro.config import instantiate
from trainrepro.errors import ConfigError
from trainrepro.norms.batch_checks import check_ghost_batch, ghost_batch_size_of
from trainrepro.norms.factory import NORM_TYPES, batch_norm, create_norm, ghost_batch_norm
from trainrepro.norms.ghost_bn import GhostBatchNorm2d

C = 5
CONF = Path(__file__).resolve().parents[1] / "conf" / "normalization"


def _input(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, C, 3, 4, generator=gen) * 3 + 2


def _pair(g: int, **kwargs: object) -> tuple[GhostBatchNorm2d, nn.BatchNorm2d]:
    """A ghost BN with non-trivial affine parameters and a BatchNorm2d with the same state."""
    ghost = GhostBatchNorm2d(C, ghost_batch_size=g, **kwargs)
    if ghost.affine:
        with torch.no_grad():
            ghost.weight.copy_(torch.linspace(0.5, 1.5, C))
            ghost.bias.copy_(torch.linspace(-1.0, 1.0, C))
    bn = nn.BatchNorm2d(C, eps=ghost.eps, momentum=ghost.momentum, affine=ghost.affine)
    bn.load_state_dict(ghost.state_dict())
    return ghost, bn


def _assert_same_stats(a: nn.BatchNorm2d, b: nn.BatchNorm2d, rtol: float = 1e-6) -> None:
    torch.testing.assert_close(a.running_mean, b.running_mean, rtol=rtol, atol=1e-7)
    torch.testing.assert_close(a.running_var, b.running_var, rtol=rtol, atol=1e-7)
    assert int(a.num_batches_tracked) == int(b.num_batches_tracked)


def test_ghost_size_equal_to_batch_is_exactly_batch_norm() -> None:
    ghost, bn = _pair(8)
    x = _input(8).requires_grad_()
    for _ in range(3):  # several steps, so running stats are compared after mixing too
        y_ghost, y_bn = ghost(x), bn(x)
        assert torch.equal(y_ghost, y_bn)
    assert torch.equal(ghost.running_mean, bn.running_mean)
    assert torch.equal(ghost.running_var, bn.running_var)
    assert torch.equal(ghost.num_batches_tracked, bn.num_batches_tracked)
    grads = torch.autograd.grad(y_ghost.square().sum(), [x, ghost.weight, ghost.bias])
    ref = torch.autograd.grad(y_bn.square().sum(), [x, bn.weight, bn.bias])
    for a, b in zip(grads, ref, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("g", "k"), [(2, 3), (4, 4), (1, 5)])
def test_training_output_is_batch_norm_of_each_chunk(g: int, k: int) -> None:
    ghost, bn = _pair(g)
    x = _input(g * k).requires_grad_()
    y = ghost(x)
    chunks = torch.cat([bn(chunk) for chunk in x.split(g)])
    torch.testing.assert_close(y, chunks, rtol=1e-6, atol=1e-6)
    # Every ghost batch is standardized on its own (before the affine transform).
    z = (y - ghost.bias.view(1, C, 1, 1)) / ghost.weight.view(1, C, 1, 1)
    z = z.reshape(k, g, C, 3, 4)
    torch.testing.assert_close(z.mean(dim=(1, 3, 4)), torch.zeros(k, C), rtol=0, atol=1e-5)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, ghost.weight, ghost.bias], upstream)
    ref = torch.autograd.grad(chunks, [x, bn.weight, bn.bias], upstream)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, None])
def test_running_stats_are_sequential_batch_norm_updates(momentum: float | None) -> None:
    g, k = 4, 6
    ghost, bn = _pair(g, momentum=momentum)
    for call in range(3):  # from the initial and from updated statistics
        x = _input(g * k, seed=call)
        ghost(x)
        for chunk in x.split(g):
            bn(chunk)
        _assert_same_stats(ghost, bn)
    assert int(ghost.num_batches_tracked) == 3 * k


def test_eval_mode_is_batch_norm_with_the_running_stats() -> None:
    ghost, bn = _pair(4)
    ghost(_input(16))  # fill the running statistics
    bn.load_state_dict(ghost.state_dict())
    ghost.eval(), bn.eval()
    x = _input(7, seed=1)  # any batch size in evaluation
    assert torch.equal(ghost(x), bn(x))
    assert int(ghost.num_batches_tracked) == 4


def test_without_affine() -> None:
    ghost, bn = _pair(3, affine=False)
    x = _input(9)
    torch.testing.assert_close(ghost(x), torch.cat([bn(c) for c in x.split(3)]))
    _assert_same_stats(ghost, bn)


def _net(norm: type[nn.Module], **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        norm(6, **kwargs),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, bias=False),
        norm(8, **kwargs),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).double()


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int) -> list[torch.Tensor]:
    """Gradients as the trainer accumulates them: pieces of ``micro``, loss scaled by share."""
    model.zero_grad(set_to_none=True)
    for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
        (F.cross_entropy(model(xm), ym) * (len(ym) / len(y))).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("micro", [8, 4, 12])
def test_micro_batch_accumulation_equals_the_whole_batch(micro: int) -> None:
    g, batch = 4, 20  # pieces of 8, 8, 4 / five of 4 / 12, 8: all whole ghost batches
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (batch,), generator=gen)
    whole = _net(GhostBatchNorm2d, ghost_batch_size=g).train()
    split = copy.deepcopy(whole)
    for a, b in zip(_grads(whole, x, y, batch), _grads(split, x, y, micro), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(whole.buffers(), split.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

    # Negative control: plain BN's statistics span the whole batch, so accumulation differs.
    plain = _net(nn.BatchNorm2d).train()
    plain_split = copy.deepcopy(plain)
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(_grads(plain, x, y, batch), _grads(plain_split, x, y, micro), strict=True)
    ]
    assert max(diffs) > 1e-6


@pytest.mark.parametrize(("g", "batch"), [(4, 10), (128, 16), (3, 1)])
def test_batch_not_a_multiple_of_the_ghost_size_is_an_error(g: int, batch: int) -> None:
    layer = GhostBatchNorm2d(C, ghost_batch_size=g).train()
    with pytest.raises(ConfigError, match=rf"does not divide the batch size {batch}$") as info:
        layer(_input(batch))
    assert (info.value.key, info.value.value) == ("normalization.ghost_batch_size", g)
    assert int(layer.num_batches_tracked) == 0  # nothing was updated


def test_factory_builds_ghost_layers_that_count_as_batch_norm() -> None:
    factory = ghost_batch_norm(ghost_batch_size=2, momentum=0.05, eps=1e-3, affine=False)
    layer = factory(8)
    assert isinstance(layer, GhostBatchNorm2d) and isinstance(layer, nn.BatchNorm2d)
    assert isinstance(layer, NORM_TYPES)
    assert (layer.ghost_batch_size, layer.momentum, layer.eps, layer.affine) == (
        2,
        0.05,
        1e-3,
        False,
    )
    assert "ghost_batch_size=2" in repr(layer)
    # Same state dict as BatchNorm2d, so checkpoints and parameter groups treat it alike.
    assert layer.state_dict().keys() == batch_norm(affine=False)(8).state_dict().keys()
    assert isinstance(create_norm("ghost_bn", ghost_batch_size=4)(3), GhostBatchNorm2d)


def test_config_file_default_is_the_papers_128() -> None:
    node = OmegaConf.load(CONF / "ghost_bn.yaml")
    assert instantiate("normalization", node)(C).ghost_batch_size == 128
    small = instantiate("normalization", OmegaConf.merge(node, {"ghost_batch_size": 8}))(C)
    assert small(_input(16)).shape == (16, C, 3, 4)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ghost_batch_size": 0}, "normalization.ghost_batch_size"),
        ({"ghost_batch_size": 2.0}, "normalization.ghost_batch_size"),
        ({"ghost_batch_size": True}, "normalization.ghost_batch_size"),
        ({"ghost_batch_size": None}, "normalization.ghost_batch_size"),
        ({"momentum": 0.0}, "normalization.momentum"),
        ({"eps": 0.0}, "normalization.eps"),
        ({"affine": 1}, "normalization.affine"),
    ],
)
def test_bad_values_raise_config_error(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        ghost_batch_norm(**kwargs)
    assert info.value.key == key


def test_ghost_batch_size_of_models_and_factories() -> None:
    assert ghost_batch_size_of(ghost_batch_norm(ghost_batch_size=32)) == 32
    assert ghost_batch_size_of(batch_norm()) is None
    assert ghost_batch_size_of(_net(nn.BatchNorm2d)) is None
    assert ghost_batch_size_of(_net(GhostBatchNorm2d, ghost_batch_size=4)) == 4
    mixed = nn.Sequential(GhostBatchNorm2d(2, ghost_batch_size=4), GhostBatchNorm2d(2, 6))
    assert ghost_batch_size_of(mixed) == 12


def test_check_ghost_batch() -> None:
    model = _net(GhostBatchNorm2d, ghost_batch_size=4)
    for size in (4, 128, 16000):
        check_ghost_batch(model, size)
    check_ghost_batch(model, 640, max_micro_batch=128)
    check_ghost_batch(model, 640, max_micro_batch=1000)  # not split
    check_ghost_batch(_net(nn.BatchNorm2d), 8, max_micro_batch=3)  # no ghost batches
    with pytest.raises(ConfigError, match=r"^normalization\.ghost_batch_size=4: .* size 6$"):
        check_ghost_batch(model, 6)
    with pytest.raises(ConfigError, match=r"^max_micro_batch=6: must be a multiple") as info:
        check_ghost_batch(ghost_batch_norm(ghost_batch_size=4), 16, max_micro_batch=6)
    assert info.value.key == "max_micro_batch"

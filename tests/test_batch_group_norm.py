"""Batch-Group Normalization (Summers & Dinneen 2020, Sec. 3.4): its extremes are BN and GN,
the general case matches the formula, and evaluation runs on running statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.batch_checks import check_batch
from trainrepro.norms.batch_group_norm import BatchGroupNorm2d
from trainrepro.norms.factory import NORM_TYPES, batch_group_norm


def _x(n: int = 6, c: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.randn(n, c, 5, 4, dtype=torch.float64) * 3 + 1).requires_grad_(True)


def _affine(layer: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial scale and shift, so their gradients are checked too
        layer.weight.copy_(torch.linspace(0.5, 2.0, layer.weight.numel()))
        layer.bias.copy_(torch.linspace(-1.0, 1.0, layer.bias.numel()))
    return layer


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    y = layer(x)
    g = torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
    grads = torch.autograd.grad((y * g).sum(), [x, layer.weight, layer.bias])
    return [y.detach(), *grads]


def test_one_channel_per_group_and_one_batch_group_is_batch_norm() -> None:
    x = _x()
    bgn = _affine(BatchGroupNorm2d(8, groups=8, batch_groups=1).double().train())
    bn = _affine(nn.BatchNorm2d(8).double().train())
    for a, b in zip(_outputs_and_grads(bgn, x), _outputs_and_grads(bn, x), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(bgn.running_mean, bn.running_mean)
    torch.testing.assert_close(bgn.running_var, bn.running_var)
    assert bgn.num_batches_tracked == bn.num_batches_tracked == 1
    bgn.eval(), bn.eval()
    torch.testing.assert_close(bgn(x), bn(x))
    assert list(bgn.state_dict()) == list(bn.state_dict())


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_one_example_per_batch_group_is_group_norm(groups: int) -> None:
    x = _x()
    bgn = _affine(BatchGroupNorm2d(8, groups=groups, batch_groups=6).double().train())
    gn = _affine(nn.GroupNorm(groups, 8).double())
    for a, b in zip(_outputs_and_grads(bgn, x), _outputs_and_grads(gn, x), strict=True):
        torch.testing.assert_close(a, b)


def test_general_case_matches_the_formula_and_updates_running_stats_per_batch_group() -> None:
    x = _x().detach()
    layer = BatchGroupNorm2d(8, groups=2, batch_groups=3, momentum=0.2).double().train()
    y = layer(x)
    expected = torch.empty_like(x)
    running_mean = torch.zeros(8, dtype=x.dtype)
    running_var = torch.ones(8, dtype=x.dtype)
    for j in range(3):  # batch groups of 2 examples, in order
        for k in range(2):  # channel groups of 4 channels
            cell = x[2 * j : 2 * j + 2, 4 * k : 4 * k + 4]
            mean, var = cell.mean(), cell.var(unbiased=False)
            expected[2 * j : 2 * j + 2, 4 * k : 4 * k + 4] = (cell - mean) / (var + 1e-5).sqrt()
            unbiased = cell.var(unbiased=True)
            running_mean[4 * k : 4 * k + 4] = 0.8 * running_mean[4 * k] + 0.2 * mean
            running_var[4 * k : 4 * k + 4] = 0.8 * running_var[4 * k] + 0.2 * unbiased
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(layer.running_mean, running_mean)
    torch.testing.assert_close(layer.running_var, running_var)
    assert layer.num_batches_tracked == 3


def test_eval_normalizes_each_example_with_running_statistics() -> None:
    x = _x().detach()
    layer = _affine(BatchGroupNorm2d(8, groups=2, batch_groups=2).double())
    layer.train()(x)
    layer.eval()
    y = layer(x)
    shape = (1, 8, 1, 1)
    expected = (x - layer.running_mean.view(shape)) / (layer.running_var.view(shape) + 1e-5).sqrt()
    expected = expected * layer.weight.view(shape) + layer.bias.view(shape)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(layer(x[:1]), y[:1])  # independent of the rest of the batch
    before = layer.running_mean.clone()
    layer(x)
    assert torch.equal(layer.running_mean, before)  # eval updates nothing


def test_batch_groups_must_tile_the_batch() -> None:
    layer = BatchGroupNorm2d(8, groups=2, batch_groups=4).train()
    with pytest.raises(ConfigError, match=r"^normalization\.batch_groups=4: does not divide"):
        layer(torch.randn(6, 8, 3, 3))
    factory = batch_group_norm(groups=2, batch_groups=4)
    check_batch(factory, 8, max_micro_batch=4)
    with pytest.raises(ConfigError, match=r"^normalization\.batch_groups=4: does not divide"):
        check_batch(factory, 6)
    with pytest.raises(ConfigError, match=r"^max_micro_batch=6: must be a multiple"):
        check_batch(factory, 16, max_micro_batch=6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"groups": 0}, "groups"), ({"batch_groups": 1.5}, "batch_groups"), ({"eps": 0}, "eps")],
)
def test_bad_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        batch_group_norm(**kwargs)
    assert info.value.key == f"normalization.{key}"


def test_groups_must_divide_the_channels_and_it_counts_as_a_norm() -> None:
    with pytest.raises(ConfigError, match=r"^normalization\.groups=3: .*8 channels"):
        batch_group_norm(groups=3)(8)
    assert isinstance(batch_group_norm(groups=2)(8), NORM_TYPES)

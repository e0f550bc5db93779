"""Normalization factories: what each normalizes over, validation, and the config files."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainrepro.config import instantiate, resolve_target
from trainrepro.errors import ConfigError
from trainrepro.norms.factory import (
    NORM_TYPES,
    NORMS,
    batch_norm,
    create_norm,
    ghost_batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    no_norm,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "normalization"
NORM_FILES = sorted(CONF.glob("*.yaml"))
# ghost_bn's 128 (Smith et al. 2018) does not divide the test batch of 4.
SMALL_OVERRIDES = {"ghost_bn": {"ghost_batch_size": 2}}


def _input() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 16, 5, 6) * 3 + 2  # far from zero mean / unit variance


def _check_standardized(y: torch.Tensor, dims: tuple[int, ...]) -> None:
    mean = y.mean(dim=dims)
    var = y.var(dim=dims, unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(var, torch.ones_like(var), atol=1e-3)


def test_batch_norm_normalizes_each_channel_over_batch_and_space() -> None:
    layer = batch_norm()(16).train()
    assert isinstance(layer, nn.BatchNorm2d)
    _check_standardized(layer(_input()), (0, 2, 3))


def test_group_norm_normalizes_each_group_of_each_sample() -> None:
    layer = group_norm(groups=4)(16)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 4
    y = layer(_input()).reshape(4, 4, 4 * 5 * 6)  # (N, G, C/G * H * W)
    _check_standardized(y, (2,))


def test_layer_norm_normalizes_each_sample() -> None:
    layer = layer_norm()(16)
    _check_standardized(layer(_input()), (1, 2, 3))
    assert layer.weight.shape == (16,)  # per-channel affine, independent of H, W


def test_instance_norm_normalizes_each_channel_of_each_sample() -> None:
    layer = instance_norm()(16)
    _check_standardized(layer(_input()), (2, 3))
    assert layer.weight.shape == (16,)


def test_no_norm_is_identity() -> None:
    x = _input()
    layer = no_norm()(16)
    assert isinstance(layer, nn.Identity)
    assert torch.equal(layer(x), x)
    assert not isinstance(layer, NORM_TYPES)


@pytest.mark.parametrize("name", ["bn", "gn", "ln", "in", "ghost_bn"])
def test_norm_layers_count_as_norm_types(name: str) -> None:
    assert isinstance(create_norm(name)(16), NORM_TYPES)


def test_ghost_batch_norm_normalizes_each_ghost_batch() -> None:
    layer = ghost_batch_norm(ghost_batch_size=2)(16).train()
    assert isinstance(layer, nn.BatchNorm2d)
    y = layer(_input()).reshape(2, 2, 16, 5, 6)  # (ghosts, g, C, H, W)
    for ghost in y:
        _check_standardized(ghost, (0, 2, 3))


def test_batch_norm_options_reach_the_layer() -> None:
    layer = batch_norm(momentum=0.01, eps=1e-3, affine=False)(8)
    assert (layer.momentum, layer.eps, layer.affine) == (0.01, 1e-3, False)


def test_group_norm_that_does_not_divide_names_the_key_and_width() -> None:
    factory = group_norm(groups=5)
    factory(10)
    with pytest.raises(ConfigError, match=r"normalization\.groups=5: .*16 channels") as info:
        factory(16)
    assert info.value.key == "normalization.groups"


@pytest.mark.parametrize(
    ("builder", "kwargs", "key"),
    [
        (group_norm, {"groups": 0}, "normalization.groups"),
        (group_norm, {"groups": 2.0}, "normalization.groups"),
        (group_norm, {"eps": 0.0}, "normalization.eps"),
        (batch_norm, {"momentum": 0.0}, "normalization.momentum"),
        (batch_norm, {"momentum": 1.5}, "normalization.momentum"),
        (batch_norm, {"eps": -1e-5}, "normalization.eps"),
        (ghost_batch_norm, {"ghost_batch_size": 0}, "normalization.ghost_batch_size"),
        (ghost_batch_norm, {"momentum": 2.0}, "normalization.momentum"),
        (layer_norm, {"eps": "small"}, "normalization.eps"),
        (instance_norm, {"affine": "yes"}, "normalization.affine"),
    ],
)
def test_bad_values_raise_config_error(builder, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        builder(**kwargs)
    assert info.value.key == key


def test_create_norm() -> None:
    layer = create_norm("gn", groups=2)(6)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 2
    valid = "bgn, bn, ghost_bn, gn"
    with pytest.raises(ConfigError, match=rf"^normalization=wn: unknown; valid: {valid}"):
        create_norm("wn")
    with pytest.raises(ConfigError, match=r"normalization\.group"):
        create_norm("gn", group=2)


def test_every_norm_has_a_config_file() -> None:
    assert {p.stem for p in NORM_FILES} >= set(NORMS)


@pytest.mark.parametrize("path", NORM_FILES, ids=lambda p: p.stem)
def test_config_file_instantiates(path: Path) -> None:
    node = OmegaConf.load(path)
    assert node.name == path.stem
    factory = instantiate(
        "normalization", OmegaConf.merge(node, SMALL_OVERRIDES.get(path.stem, {}))
    )
    assert callable(factory)
    layer = factory(16)
    assert isinstance(layer, nn.Module)
    x = _input()
    assert layer(x).shape == x.shape


@pytest.mark.parametrize("path", NORM_FILES, ids=lambda p: p.stem)
def test_config_keys_are_exactly_the_builder_kwargs(path: Path) -> None:
    node = OmegaConf.to_container(OmegaConf.load(path))
    params = inspect.signature(
        resolve_target(node["_target_"], "normalization._target_")
    ).parameters
    keys = {k: v for k, v in node.items() if k not in ("name", "_target_")}
    assert set(keys) == set(params)
    # A preset (gn_ws, bn_ws) is its builder with one switch turned on; the rest are defaults.
    presets = {"gn_ws": {"weight_standardization"}, "bn_ws": {"weight_standardization"}}
    for key, value in keys.items():
        if key not in presets.get(path.stem, ()):
            assert params[key].default == value, key
    if path.stem in presets:
        assert node["weight_standardization"] is True

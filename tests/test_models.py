"""Models: every model with every normalization, sizes from the papers, validation, configs."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainrepro.config import instantiate, resolve_target
from trainrepro.errors import ConfigError
from trainrepro.models import MODELS, NORMALIZER_FREE, create_model
from trainrepro.norms.factory import NORM_TYPES, NORMS, NormFactory, batch_norm, group_norm, no_norm

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
MODEL_FILES = sorted(CONF.glob("*.yaml"))

# Small settings so each forward/backward takes milliseconds on a CPU.
SMALL: dict[str, dict[str, Any]] = {
    "wrn": {"depth": 10, "width": 1},
    "resnet": {"depth": 18, "width": 8},
    "lenet5": {},
    "mobilenetv2": {"width_mult": 0.25},
    "resnet_cifar": {"depth": 8},
    "nf_resnet": {"depth": 8},
}
# gn with 2 groups divides every layer of the small models (lenet5 has a 6-channel conv);
# ghost_bn needs ghost batches that divide the test batch of 4.
NORM_KWARGS: dict[str, dict[str, Any]] = {
    "gn": {"groups": 2},
    "bgn": {"groups": 2},
    "ghost_bn": {"ghost_batch_size": 2},
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(
    name: str, norm_layer: NormFactory, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    return MODELS[name](
        num_classes=10,
        in_channels=in_channels,
        image_size=image_size,
        norm_layer=norm_layer,
        **{**SMALL[name], **kwargs},
    )


def _norm_for(name: str, factory: NormFactory) -> NormFactory:
    """Normalizer-free models take only normalization=none (see models/__init__.py)."""
    return no_norm() if name in NORMALIZER_FREE else factory


def test_small_settings_cover_every_model() -> None:
    assert set(SMALL) == set(MODELS)


def _forward_backward(name: str, factory: NormFactory, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = _build(name, factory, in_channels=in_channels, image_size=image_size).train()
    out = model(torch.randn(4, in_channels, image_size, image_size))
    assert out.shape == (4, 10)
    out.logsumexp(dim=1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_with_every_norm_on_cifar_shapes(name: str, norm: str) -> None:
    factory = NORMS[norm](**NORM_KWARGS.get(norm, {}))
    if name in NORMALIZER_FREE and norm != "none":
        with pytest.raises(ConfigError, match=rf"^normalization={norm}: model={name} is"):
            _build(name, factory)
        return
    _forward_backward(name, factory, 3, 32)


@pytest.mark.parametrize("norm", list(NORMS))
def test_lenet5_with_every_norm_on_mnist_shapes(norm: str) -> None:
    _forward_backward("lenet5", NORMS[norm](**NORM_KWARGS.get(norm, {})), 1, 28)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_on_mnist_shapes(name: str) -> None:
    _forward_backward(name, _norm_for(name, batch_norm()), 1, 28)


@pytest.mark.parametrize("name", list(MODELS))
def test_norm_layers_come_only_from_the_factory(name: str) -> None:
    plain = _build(name, no_norm())
    assert not any(isinstance(m, NORM_TYPES) for m in plain.modules())
    if name in NORMALIZER_FREE:  # no norm layers at all; its Scaled-WS convs keep a bias
        return
    bn = _build(name, batch_norm())
    kinds = {type(m) for m in bn.modules() if isinstance(m, NORM_TYPES)}
    assert kinds == {nn.BatchNorm2d}
    # A conv followed by a norm needs no bias; the models keep that without a norm too.
    assert all(m.bias is None for m in plain.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_every_resnet_depth(depth: int) -> None:
    model = _build("resnet", batch_norm(), depth=depth, width=4)
    assert _params(model) > 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("depth", "width", "millions"),
    [(16, 4, 2.7), (16, 8, 11.0), (40, 4, 8.9)],  # Zagoruyko & Komodakis 2016, Tables 1 and 4
)
def test_wrn_parameter_count_matches_paper(depth: int, width: int, millions: float) -> None:
    model = _build("wrn", batch_norm(), depth=depth, width=width)
    assert abs(_params(model) / 1e6 - millions) < 0.06


def test_wrn_16_4_exact_parameter_count() -> None:
    n = _params(_build("wrn", batch_norm(), depth=16, width=4))
    assert n == 2_748_890 and 2.7e6 <= n <= 2.8e6


def test_reference_parameter_counts() -> None:
    # Widely reported CIFAR-10 sizes of the same layouts.
    assert _params(_build("resnet", batch_norm(), width=64)) == 11_173_962
    assert _params(_build("mobilenetv2", batch_norm(), width_mult=1.0)) == 2_236_682
    lenet = _build("lenet5", batch_norm(), in_channels=1, image_size=28)
    assert lenet.classifier[0].in_features == 16 * 5 * 5  # as the original on 32x32 inputs


@pytest.mark.parametrize("norm", list(NORMS))
def test_resnet_cifar_shortcut_a_with_every_norm(norm: str) -> None:
    factory = NORMS[norm](**NORM_KWARGS.get(norm, {}))
    torch.manual_seed(0)
    model = _build("resnet_cifar", factory, shortcut="A").train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    out.logsumexp(dim=1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("depth", "millions"),
    [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)],  # He et al. 2016, Table 6
)
def test_resnet_cifar_parameter_count_matches_paper(depth: int, millions: float) -> None:
    model = _build("resnet_cifar", batch_norm(), depth=depth, shortcut="A")
    assert round(_params(model) / 1e6, 2 if millions < 1 else 1) == millions


def test_resnet_cifar_20_exact_parameter_counts() -> None:
    # Option A adds no parameters; B adds 1x1 conv + BN projections 16->32 (576) and 32->64 (2176).
    assert _params(_build("resnet_cifar", batch_norm(), depth=20, shortcut="A")) == 269_722
    assert _params(_build("resnet_cifar", batch_norm(), depth=20, shortcut="B")) == 272_474
    assert _params(_build("resnet_cifar", batch_norm(), depth=20)) == 272_474  # B is the default


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize(("image_size", "last"), [(32, 8), (28, 7)])
def test_resnet_cifar_shapes(shortcut: str, image_size: int, last: int) -> None:
    model = _build("resnet_cifar", batch_norm(), depth=20, shortcut=shortcut).eval()
    assert len(model.stages) == 3 and all(len(stage) == 3 for stage in model.stages)
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        features = model.stages(model.stem(x))
        assert features.shape == (2, 64, last, last)
        assert model(x).shape == (2, 10)


def test_resnet_cifar_shortcut_a_pads_with_zeros() -> None:
    block = _build("resnet_cifar", no_norm(), shortcut="A").stages[1][0]
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()
    assert not list(block.shortcut.parameters())


def test_mobilenetv2_ends_at_4x4_on_cifar() -> None:
    model = _build("mobilenetv2", batch_norm())
    with torch.no_grad():
        assert model.features(torch.randn(2, 3, 32, 32)).shape[-2:] == (4, 4)


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("wrn", 15),
        ("wrn", 4),
        ("resnet", 20),
        ("resnet_cifar", 18),
        ("resnet_cifar", 21),
        ("resnet_cifar", 2),
        ("resnet_cifar", 20.0),
        ("resnet_cifar", True),
    ],
)
def test_bad_depth_names_model_depth(name: str, depth: int) -> None:
    with pytest.raises(ConfigError) as info:
        _build(name, batch_norm(), depth=depth)
    assert info.value.key == "model.depth"


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("wrn", {"width": 0}, "model.width"),
        ("wrn", {"dropout": 1.0}, "model.dropout"),
        ("resnet", {"width": -8}, "model.width"),
        ("mobilenetv2", {"width_mult": 0.0}, "model.width_mult"),
        ("mobilenetv2", {"dropout": -0.1}, "model.dropout"),
        ("resnet_cifar", {"shortcut": "C"}, "model.shortcut"),
        ("resnet_cifar", {"shortcut": "a"}, "model.shortcut"),
        ("resnet_cifar", {"shortcut": None}, "model.shortcut"),
    ],
)
def test_bad_values_raise_config_error(name: str, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _build(name, batch_norm(), **kwargs)
    assert info.value.key == key


def test_lenet5_rejects_tiny_images() -> None:
    _build("lenet5", batch_norm(), image_size=12)
    with pytest.raises(ConfigError, match=r"^model=lenet5: .*11x11"):
        _build("lenet5", batch_norm(), image_size=11)


@pytest.mark.parametrize(("name", "groups"), [("wrn", 32), ("lenet5", 4), ("mobilenetv2", 16)])
def test_group_norm_groups_must_divide_every_layer(name: str, groups: int) -> None:
    with pytest.raises(ConfigError, match=rf"^normalization\.groups={groups}: does not divide"):
        _build(name, group_norm(groups=groups))


def test_create_model() -> None:
    model = create_model(
        "wrn",
        depth=10,
        width=1,
        num_classes=5,
        in_channels=3,
        image_size=32,
        norm_layer=batch_norm(),
    )
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    valid = "lenet5, mobilenetv2, nf_resnet, resnet"
    with pytest.raises(ConfigError, match=rf"^model=vgg: unknown; valid: {valid}"):
        create_model("vgg")
    with pytest.raises(ConfigError, match=r"model\.depht"):
        create_model(
            "wrn", depht=10, num_classes=5, in_channels=3, image_size=32, norm_layer=batch_norm()
        )


def test_every_model_has_a_config_file() -> None:
    assert {p.stem for p in MODEL_FILES} >= {
        "wrn",
        "resnet",
        "lenet5",
        "mobilenetv2",
        "resnet_cifar",
    }


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_config_file_instantiates(path: Path) -> None:
    node = OmegaConf.load(path)
    assert node.name == path.stem
    norm = _norm_for(path.stem, batch_norm())
    model = instantiate(
        "model", node, num_classes=10, in_channels=3, image_size=32, norm_layer=norm
    )
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_config_keys_are_the_builder_defaults(path: Path) -> None:
    node = OmegaConf.to_container(OmegaConf.load(path))
    params = inspect.signature(resolve_target(node["_target_"], "model._target_")).parameters
    for key, value in node.items():
        if key not in ("name", "_target_"):
            assert params[key].default == value, key

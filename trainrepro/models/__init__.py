"""Image classifiers; each takes its normalization layers from a ``NormFactory``.

Builders share the runtime keywords ``num_classes``, ``in_channels``, ``image_size`` and
``norm_layer`` (see trainrepro.norms.factory), plus their own options from conf/model/<name>.yaml.
Imports norms (and config, errors); nothing of the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from trainrepro.config import build_named
from trainrepro.models.lenet import build_lenet5
from trainrepro.models.mobilenetv2 import build_mobilenetv2
from trainrepro.models.nf_resnet import build_nf_resnet
from trainrepro.models.resnet import build_resnet
from trainrepro.models.resnet_cifar import build_resnet_cifar
from trainrepro.models.wrn import build_wrn

MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn": build_wrn,
    "resnet": build_resnet,
    "lenet5": build_lenet5,
    "mobilenetv2": build_mobilenetv2,
    "resnet_cifar": build_resnet_cifar,
    "nf_resnet": build_nf_resnet,
}
# Models without normalization layers by design: they take only ``normalization=none`` and refuse
# any other norm factory with a ConfigError naming ``normalization`` (Brock et al. 2021a).
NORMALIZER_FREE: frozenset[str] = frozenset({"nf_resnet"})


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (a conf/model option), e.g.
    ``create_model("wrn", depth=28, width=10, num_classes=10, in_channels=3, image_size=32,
    norm_layer=batch_norm())``."""
    return build_named(MODELS, "model", name, **kwargs)


__all__ = [
    "MODELS",
    "NORMALIZER_FREE",
    "build_lenet5",
    "build_mobilenetv2",
    "build_nf_resnet",
    "build_resnet",
    "build_resnet_cifar",
    "build_wrn",
    "create_model",
]

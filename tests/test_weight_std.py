"""Weight Standardization (Qiao et al. 2019): the formula, gradients, state dict, the switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import tiny_cfg
from torch import nn

from trainrepro.engine.build import build_run
from trainrepro.errors import ConfigError
from trainrepro.models import create_model
from trainrepro.norms.factory import apply_norm_options, batch_norm, create_norm
from trainrepro.norms.weight_std import WS_EPS, WSConv2d, standardize_convs, standardize_weight


def reference(w: torch.Tensor) -> torch.Tensor:
    """The authors' formula written out: unbiased std over the fan-in, eps added to the std."""
    flat = w.reshape(w.shape[0], -1)
    n = flat.shape[1]
    mean = flat.sum(1, keepdim=True) / n
    std = (((flat - mean) ** 2).sum(1, keepdim=True) / (n - 1)).sqrt()
    return ((flat - mean) / (std + WS_EPS)).reshape(w.shape)


def test_standardized_weight_matches_the_formula() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3, dtype=torch.float64) * 0.2 + 0.05
    got = standardize_weight(w)
    torch.testing.assert_close(got, reference(w), rtol=1e-12, atol=1e-12)
    flat = got.reshape(8, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(8, dtype=w.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(8, dtype=w.dtype), atol=1e-3, rtol=0)


def test_ws_conv_output_and_gradients() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    standardize_convs(conv)
    assert isinstance(conv, WSConv2d)
    y = conv(x)
    w = conv.weight.detach().clone().requires_grad_(True)
    y_ref = F.conv2d(x, reference(w), conv.bias, padding=1)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    torch.testing.assert_close(conv.weight.grad, w.grad)
    # The standardized weight is invariant to shifting and scaling a filter, so its gradient is
    # orthogonal to the constant direction of each filter.
    sums = conv.weight.grad.reshape(6, -1).sum(1)
    torch.testing.assert_close(sums, torch.zeros_like(sums), atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda t: standardize_weight(t), (w.detach().requires_grad_(),))


def _wrn(norm) -> nn.Module:
    model = create_model(
        "wrn", depth=10, width=1, num_classes=5, in_channels=3, image_size=16, norm_layer=norm
    )
    return apply_norm_options(model, norm)


def test_switch_swaps_every_conv_and_keeps_the_state_dict() -> None:
    torch.manual_seed(0)
    plain = _wrn(batch_norm())
    torch.manual_seed(0)
    ws = _wrn(batch_norm(weight_standardization=True))
    convs = [m for m in ws.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is WSConv2d for m in convs)
    assert all(type(m) is nn.Linear for m in ws.modules() if isinstance(m, nn.Linear))
    assert not any(type(m) is WSConv2d for m in plain.modules())
    a, b = plain.state_dict(), ws.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same init, raw weights stored
    ws.load_state_dict(a)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(plain.eval()(x), ws.eval()(x))


def test_fan_in_of_one_is_refused() -> None:
    depthwise_1x1 = nn.Sequential(nn.Conv2d(4, 4, 1, groups=4))
    with pytest.raises(ConfigError, match=r"^normalization\.weight_standardization=True: conv 0"):
        standardize_convs(depthwise_1x1)


@pytest.mark.parametrize("name", ["bn", "ghost_bn", "gn", "ln", "in", "bgn"])
def test_every_norm_option_takes_the_switch(name: str) -> None:
    assert create_norm(name, weight_standardization=True).weight_standardization is True
    with pytest.raises(ConfigError, match=r"^normalization\.weight_standardization=yes"):
        create_norm(name, weight_standardization="yes")


def test_gn_ws_option_builds_ws_convs() -> None:
    run = build_run(tiny_cfg("normalization=gn_ws"))
    assert isinstance(run.model.stem, WSConv2d)
    assert isinstance(build_run(tiny_cfg("normalization=bn_ws")).model.stem, WSConv2d)
    assert type(build_run(tiny_cfg("normalization=gn")).model.stem) is nn.Conv2d

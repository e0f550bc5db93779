"""MobileNetV2 (Sandler et al. 2018): its size written out by hand from the architecture, the
Figure 6 ablation switches (projection, shortcut), and `trainrepro params` (parameters and
multiply-adds of the model a run would build)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from trainrepro.analysis.params import main as params_main
from trainrepro.models import create_model
from trainrepro.models.cost import forward_flops
from trainrepro.models.mobilenetv2 import Residual
from trainrepro.norms.factory import batch_norm

# The paper's Table 2 as (t, n, s), with the CIFAR strides (the 24-channel stage at 1), and the
# output channels at each width multiplier, rounded by hand with the authors' rule (nearest
# multiple of 8, but not more than 10% down): 0.75 * 24 = 18 -> 16 is 11% down, so 24.
TNS = ((1, 1, 1), (6, 2, 1), (6, 3, 2), (6, 4, 2), (6, 3, 1), (6, 3, 2), (6, 1, 1))
WIDTHS = {  # width_mult: (stem, stage outputs, last conv)
    1.0: (32, (16, 24, 32, 64, 96, 160, 320), 1280),
    0.75: (24, (16, 24, 24, 48, 72, 120, 240), 1280),  # the last conv is not thinned (Sec. 6.1)
    0.5: (16, (8, 16, 16, 32, 48, 80, 160), 1280),
}


def blocks(width: float) -> list[tuple[int, int, int, int]]:
    """(in, out, stride, t) of the 17 blocks."""
    stem, outs, _ = WIDTHS[width]
    rows, c_in = [], stem
    for (t, n, s), c in zip(TNS, outs, strict=True):
        for i in range(n):
            rows.append((c_in, c, s if i == 0 else 1, t))
            c_in = c
    return rows


def hand_params(width: float, classes: int = 10) -> int:
    """Weights of every conv (no biases: a BN follows) and linear layer, and 2 per BN channel."""
    stem, _, last = WIDTHS[width]
    total = 3 * 3 * 3 * stem + 2 * stem
    for c_in, c_out, _, t in blocks(width):
        hidden = c_in * t
        if t != 1:  # the t=1 block has no expansion conv (the paper's Table 1, torchvision)
            total += c_in * hidden + 2 * hidden
        total += 3 * 3 * hidden + 2 * hidden  # depthwise: one 3x3 filter per channel
        total += hidden * c_out + 2 * c_out
    c_in = blocks(width)[-1][1]
    return total + c_in * last + 2 * last + last * classes + classes


def hand_madds(width: float, size: int = 32, classes: int = 10) -> int:
    """k*k*Cin/groups*Cout*Hout*Wout of every conv, plus in*out of the classifier."""
    stem, _, last = WIDTHS[width]
    h = size
    total = 3 * 3 * 3 * stem * h * h  # stride 1 on CIFAR
    for c_in, c_out, stride, t in blocks(width):
        hidden = c_in * t
        if t != 1:
            total += c_in * hidden * h * h
        h = (h - 1) // stride + 1  # 3x3, padding 1
        total += 3 * 3 * hidden * h * h  # depthwise: Cin/groups = 1
        total += hidden * c_out * h * h
    return total + blocks(width)[-1][1] * last * h * h + last * classes


def build(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "mobilenetv2",
        num_classes=10,
        in_channels=3,
        image_size=32,
        norm_layer=batch_norm(),
        **kwargs,
    ).eval()


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_default_cifar10_parameter_count_by_hand():
    # kuangliu/pytorch-cifar's model has 2,237,770 parameters without its projection shortcuts
    # (2,296,922 with them: 1x1 conv+BN where stride 1 and in != out; the paper adds an identity
    # only where in == out, as we do). The difference, 1,088 = 32*32 + 2*32, is the 1x1
    # expansion conv + BN its t=1 block keeps and the paper's Table 1 (and we) leave out.
    # ReLU6 for ReLU costs no parameters.
    assert hand_params(1.0) == 2_236_682
    assert params(build()) == hand_params(1.0)


@pytest.mark.parametrize("width", [0.5, 0.75])
def test_width_multipliers_round_as_the_reference(width):
    model = build(width_mult=width)
    stem, _, last = WIDTHS[width]
    residuals = [m for m in model.features if isinstance(m, Residual)]
    assert model.features[0][0].out_channels == stem
    assert [r.block[-1][0].out_channels for r in residuals] == [b[1] for b in blocks(width)]
    assert model.classifier[1].in_features == last
    assert params(model) == hand_params(width)


def projections(model: nn.Module) -> list[nn.Sequential]:
    return [m.block[-1] for m in model.features if isinstance(m, Residual)]


def test_relu6_projection_adds_an_activation_after_every_projection():
    linear, relu6 = build(), build(projection="relu6")
    assert all(len(p) == 2 for p in projections(linear))  # conv, norm
    assert all(isinstance(p[-1], nn.ReLU6) for p in projections(relu6))
    assert len(projections(relu6)) == 17
    assert params(relu6) == params(linear)
    relu6.load_state_dict(linear.state_dict())  # the same weights: only the activation differs
    seen: dict[str, list[torch.Tensor]] = {"linear": [], "relu6": []}
    for name, model in (("linear", linear), ("relu6", relu6)):
        for p in projections(model):
            p.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o.clone()))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out_linear, out_relu6 = linear.features(x), relu6.features(x)
    assert (out_linear - out_relu6).abs().max() > 1e-3 * out_linear.abs().max()
    assert all(o.min() >= 0 and o.max() <= 6 for o in seen["relu6"])
    assert all(o.min() < 0 for o in seen["linear"])  # a linear bottleneck keeps negatives


# Where the identity is added at width 1 (0-based block index; the tensor's channels). The
# bottleneck shortcut joins a block's thin in- and output where stride 1 and in == out; the
# expansion shortcut joins the wide tensor block i's depthwise conv reads (in * 6) to the one
# block i+1's reads (out * 6), so it adds exactly where the bottleneck one does, at 6x width.
ADDS = {
    "bottleneck": ([2, 4, 5, 7, 8, 9, 11, 12, 14, 15], [24, 32, 32, 64, 64, 64, 96, 96, 160, 160]),
    "expansion": (
        [2, 4, 5, 7, 8, 9, 11, 12, 14, 15],
        [144, 192, 192, 384, 384, 384, 576, 576, 960, 960],
    ),
    "none": ([], []),
}


@pytest.mark.parametrize("shortcut", list(ADDS))
def test_shortcut_placement(shortcut):
    model = build(shortcut=shortcut)
    assert params(model) == hand_params(1.0)  # identities add no parameters
    units = [m for m in model.features if isinstance(m, Residual)]
    assert len(units) == 17
    adds: list[tuple[int, int]] = []

    def hook(module, inputs, output, index):
        (x,) = inputs
        plain = module.block(x.clone())
        if not torch.allclose(output, plain):
            assert torch.allclose(output, x + plain, atol=1e-5)
            adds.append((index, x.shape[1]))

    for i, unit in enumerate(units):
        unit.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10)
    index, channels = ADDS[shortcut]
    assert [a[0] for a in adds] == index
    assert [a[1] for a in adds] == channels


def test_expansion_units_span_depthwise_projection_and_next_expansion():
    units = [m for m in build(shortcut="expansion").features if isinstance(m, Residual)]
    first = units[2].block  # block 2's depthwise (144) and projection (-> 24), block 3's expansion
    assert [s[0].out_channels for s in first] == [144, 24, 144]
    assert first[0][0].groups == 144 and isinstance(first[-1][-1], nn.ReLU6)


def test_madds_of_a_conv_and_a_depthwise_conv():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # 10x10 -> 5x5; the bias is not counted
    assert forward_flops(conv, (8, 10, 10)) // 2 == 3 * 3 * 8 * 16 * 5 * 5
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    assert forward_flops(depthwise, (16, 8, 8)) // 2 == 3 * 3 * (16 // 16) * 16 * 8 * 8
    grouped = nn.Conv2d(16, 32, 5, padding=2, groups=4, bias=False)
    assert forward_flops(grouped, (16, 6, 6)) // 2 == 5 * 5 * (16 // 4) * 32 * 6 * 6
    assert forward_flops(nn.Linear(20, 7), (1, 1, 20)) // 2 == 20 * 7


def test_params_command_json_matches_the_hand_counts(tmp_path, monkeypatch, capsys):
    # CIFAR-10's shape is known from its config: an empty data folder is never looked at.
    monkeypatch.setenv("TRAINREPRO_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert params_main(["model=mobilenetv2", "model.width_mult=0.5,0.75,1.0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["swept"] for r in rows] == [{"model.width_mult": w} for w in ("0.5", "0.75", "1.0")]
    assert [r["params"] for r in rows] == [hand_params(w) for w in (0.5, 0.75, 1.0)]
    assert [r["madds"] for r in rows] == [hand_madds(w) for w in (0.5, 0.75, 1.0)]
    assert rows[0]["input"] == [3, 32, 32] and rows[0]["num_classes"] == 10
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_params_command_table_has_one_row_per_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["model=lenet5,mobilenetv2", "dataset=synthetic", "dataset.num_classes=5"]
    assert params_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "input", "classes", "params", "MAdds"]
    rows = [line.split() for line in lines[1:] if line.split()[0] in ("lenet5", "mobilenetv2")]
    assert [r[0] for r in rows] == ["lenet5", "mobilenetv2"]
    assert rows[1][1:4] == ["3x32x32", "5", f"{hand_params(1.0, classes=5):,}"]
    assert rows[1][4] == f"{hand_madds(1.0, classes=5):,}"
    assert len(lines) == 4  # header, two rows, the note saying what MAdds count
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.projection=relu", "error: model.projection=relu: must be linear or relu6"),
        (
            "model.shortcut=bottleneck,wide",
            "error: model.shortcut=wide: must be one of bottleneck, expansion, none",
        ),
    ],
)
def test_params_command_bad_value_is_one_line(override, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert params_main(["model=mobilenetv2", override]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [message]

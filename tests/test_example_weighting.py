"""Inference example weighting (Summers & Dinneen 2020, Sec. 3.1) and `trainrepro bn-alpha`."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from support import tiny_cfg
from torch import nn

from trainrepro.analysis.bn_alpha import main as bn_alpha_main
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.norms.example_weighting import example_weighting, weighted_batch_norm
from trainrepro.norms.ghost_bn import GhostBatchNorm2d


def _bn(channels: int = 4) -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(channels).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels))
        bn.running_var.copy_(torch.rand(channels) + 0.5)
        bn.weight.copy_(torch.rand(channels) + 0.5)
        bn.bias.copy_(torch.randn(channels))
    return bn.eval()


def _x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 4, 5, 6, dtype=torch.float64) * 2 + 0.5


def test_formula() -> None:
    bn, x, alpha = _bn(), _x(), 0.3
    m, v = bn.running_mean.view(1, 4, 1, 1), bn.running_var.view(1, 4, 1, 1)
    own_mean = x.mean((2, 3), keepdim=True)
    own_sq = (x**2).mean((2, 3), keepdim=True)
    mu = alpha * own_mean + (1 - alpha) * m
    var = alpha * own_sq + (1 - alpha) * (v + m**2) - mu**2
    expected = (x - mu) / (var + bn.eps).sqrt() * bn.weight.view(1, 4, 1, 1)
    expected = expected + bn.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(weighted_batch_norm(bn, x, alpha), expected)


def test_extremes_are_batch_norm_and_instance_norm() -> None:
    bn, x = _bn(), _x()
    torch.testing.assert_close(weighted_batch_norm(bn, x, 0.0), bn(x))
    instance = F.instance_norm(x, weight=bn.weight, bias=bn.bias, eps=bn.eps)
    torch.testing.assert_close(weighted_batch_norm(bn, x, 1.0), instance)


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        GhostBatchNorm2d(4, ghost_batch_size=2),
        nn.Flatten(),
    )
    net.train()(torch.randn(8, 3, 7, 7) * 2 + 1)  # non-trivial running statistics
    return net.eval()


def test_alpha_zero_is_plain_evaluation_bit_for_bit_and_the_block_restores() -> None:
    net, x = _net(), torch.randn(5, 3, 7, 7)
    plain = net(x)
    with example_weighting(net, 0.0):
        assert torch.equal(net(x), plain)
    with example_weighting(net, 0.2):
        weighted = net(x)
        net.train()
        net(torch.randn(4, 3, 7, 7))  # train mode inside the block runs the layers' own forward
        net.eval()
    assert not torch.allclose(weighted, plain)
    assert "forward" not in vars(net[1]) and "forward" not in vars(net[4])
    with torch.no_grad():
        assert not torch.allclose(net(x), plain)  # the train call above moved the running stats


def test_every_batch_norm_is_weighted_and_examples_stay_independent() -> None:
    net, x = _net(), torch.randn(5, 3, 7, 7)
    with example_weighting(net, 0.5):
        full = net(x)
        assert torch.allclose(net(x[2:3]), full[2:3], atol=1e-6)
    with torch.no_grad(), example_weighting(net, 0.5):
        h = net[0](x)
        torch.testing.assert_close(net[1](h), weighted_batch_norm(net[1], h, 0.5))
        h = net[3](net[2](net[1](h)))
        torch.testing.assert_close(net[4](h), weighted_batch_norm(net[4], h, 0.5))  # ghost BN


def test_model_without_batch_norm_and_bad_alpha() -> None:
    with pytest.raises(ConfigError, match=r"^normalization=GroupNorm: the model has no batch"):
        with example_weighting(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)), 0.1):
            pass
    with pytest.raises(ConfigError, match=r"^alpha=1.5: must be a number in \[0, 1\]"):
        with example_weighting(_net(), 1.5):
            pass


# ---------------------------------------------------------------- the command
def _digest(run_dir) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bn") / "run"
    cfg = tiny_cfg("epochs=1", "dataset.num_train=256", "dataset.val_fraction=0.25")
    summary = train(cfg, run_dir)
    assert summary["status"] == "completed"
    return run_dir, summary


def test_bn_alpha_reports_and_never_overwrites(bn_run, capsys) -> None:
    run_dir, summary = bn_run
    before = _digest(run_dir)
    assert bn_alpha_main([str(run_dir), "--alphas", "0.05,0.5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "chosen" in out and "validation split (64 images)" in out
    report = json.loads((run_dir / "bn_alpha.json").read_text())
    assert [r["alpha"] for r in report["selection"]] == [0.0, 0.05, 0.5]
    assert report["split"] == "val"
    # alpha 0 is the run's own evaluation, exactly.
    assert report["test"]["before"]["acc"] == summary["final"]["test_acc"]
    assert report["test"]["before"]["loss"] == summary["final"]["test_loss"]
    assert report["chosen_alpha"] in (0.0, 0.05, 0.5)
    after = _digest(run_dir)
    assert {k: after[k] for k in before} == before  # nothing in the run directory changed
    assert bn_alpha_main([str(run_dir), "--alphas", "0.1", "--device", "cpu"]) == 0
    assert (run_dir / "bn_alpha-2.json").is_file()
    capsys.readouterr()
    assert bn_alpha_main([str(run_dir), "--out", str(run_dir / "summary.json")]) == 2
    assert "--out=" in capsys.readouterr().err
    assert _digest(run_dir)["summary.json"] == before["summary.json"]


def test_bn_alpha_without_validation_split_carves_one(bn_run, tmp_path, capsys) -> None:
    run_dir, _ = bn_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    text = (copy / "config.yaml").read_text().replace("val_fraction: 0.25", "val_fraction: 0.0")
    (copy / "config.yaml").write_text(text)
    out_file = tmp_path / "elsewhere" / "report.json"
    assert bn_alpha_main([str(copy), "--alphas", "0.1", "--out", str(out_file)]) == 0
    report = json.loads(out_file.read_text())
    assert report["split"] == "train-holdout"
    assert "which the model was trained on" in report["note"]
    assert bn_alpha_main([str(copy), "--split", "val"]) == 2
    assert "error: --split=val: the run has no validation split" in capsys.readouterr().err


def test_bn_alpha_errors_are_one_line(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bn_alpha_main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run_dir=") and "has no checkpoint.pt" in err
    assert err.count("\n") == 1
    gn = tmp_path / "gn"
    gn.mkdir()
    from omegaconf import OmegaConf

    (gn / "config.yaml").write_text(OmegaConf.to_yaml(tiny_cfg("normalization=gn"), resolve=True))
    (gn / "checkpoint.pt").write_bytes(b"")
    assert bn_alpha_main([str(gn)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: normalization=gn: has no batch norm layer")
    assert bn_alpha_main([str(gn), "--alphas", "0.1,2"]) == 2
    assert capsys.readouterr().err.startswith("error: alpha=2.0: must be a number in [0, 1]")

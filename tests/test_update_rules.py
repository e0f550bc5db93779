"""Update rules against the papers' formulas: SVRG (Johnson & Zhang 2013) and STORM (Cutkosky &
Orabona 2019), on a model small enough to compute every gradient by hand in the test."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from support import tiny_cfg
from torch import nn

from trainrepro.data.loader import DeviceLoader
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.optim.storm import storm
from trainrepro.optim.svrg import svrg
from trainrepro.optim.update_rules import PlainRule, update_rule_for

N, B = 48, 8


def tiny_run(model: nn.Module, optimizer: torch.optim.Optimizer) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (N,), generator=g)
    loader = DeviceLoader(
        images, labels, mean=[0.5], std=[0.25], device="cpu", augment=None, seed=0
    )
    return SimpleNamespace(
        model=model,
        optimizer=optimizer,
        train_loader=loader,
        scaler=None,
        autocast_dtype=None,
        device=torch.device("cpu"),
        rule=update_rule_for(optimizer, model),
    )


def linear(bn: bool = False) -> nn.Module:
    torch.manual_seed(1)
    layers = [nn.Flatten(), nn.Linear(16, 3)]
    return nn.Sequential(nn.BatchNorm2d(1), *layers) if bn else nn.Sequential(*layers)


def grads_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def full_gradient(
    model: nn.Module, run: SimpleNamespace, epoch: int = 0, shuffle: bool = True
) -> list[torch.Tensor]:
    """The mean over an epoch's batches (as the trainer draws them) of the batch gradient."""
    model.zero_grad(set_to_none=True)
    batches = list(run.train_loader.batches(epoch, B, shuffle=shuffle))
    for x, y in batches:
        (F.cross_entropy(model(x), y) / len(batches)).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_plain_optimizers_get_the_plain_rule():
    model = linear()
    assert isinstance(
        update_rule_for(torch.optim.SGD(model.parameters(), lr=0.1), model), PlainRule
    )


def test_svrg_applies_g_w_minus_g_snapshot_plus_full_gradient():
    model = linear()
    run = tiny_run(model, svrg(model, lr=0.05, snapshot_every=1))
    assert run.rule.start_epoch(run, 0, B) == N
    snapshot = [p.detach().clone() for p in model.parameters()]
    reference = linear()
    reference.load_state_dict(model.state_dict())
    mu = full_gradient(reference, run)
    batches = list(run.train_loader.batches(0, B))
    for step, (x, y) in enumerate(batches[:4]):
        run.optimizer.zero_grad(set_to_none=True)
        _, _, evals = run.rule.gradients(run, x, y, None)
        assert evals == 2 * B
        g_w = grads_at(reference_at(model), x, y)
        g_snap = grads_at(reference_at_params(snapshot), x, y)
        expected = [a - b + m for a, b, m in zip(g_w, g_snap, mu, strict=True)]
        for p, e in zip(model.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, e)
        if step == 0:  # at the snapshot itself the estimate is the full gradient
            for p, m in zip(model.parameters(), mu, strict=True):
                torch.testing.assert_close(p.grad, m)
        before = [p.detach().clone() for p in model.parameters()]
        run.optimizer.step()
        for p, w, e in zip(model.parameters(), before, expected, strict=True):
            torch.testing.assert_close(p.detach(), w - 0.05 * e)


def reference_at(model: nn.Module) -> nn.Module:
    copy = linear()
    copy.load_state_dict(model.state_dict())
    return copy


def reference_at_params(params: list[torch.Tensor]) -> nn.Module:
    copy = linear()
    with torch.no_grad():
        for p, v in zip(copy.parameters(), params, strict=True):
            p.copy_(v)
    return copy


def test_svrg_snapshot_passes_leave_the_models_bn_statistics_alone():
    model = linear(bn=True)
    run = tiny_run(model, svrg(model, lr=0.05, snapshot_every=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run.rule.start_epoch(run, 0, B)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert run.rule.start_epoch(run, 1, B) == 0  # snapshot_every=2: no pass in epoch 1


def class_ordered_run(bn_mode: str) -> SimpleNamespace:
    """Image-folder order: 16 images of each of 3 classes in turn, each class its own mean
    brightness, so BN statistics of a batch depend on which classes it holds."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(N // 3)
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (N, 1, 4, 4), generator=g))
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 3),
    )  # fmt: skip
    loader = DeviceLoader(
        images.to(torch.uint8), labels, mean=[0.5], std=[0.25], device="cpu", augment=None,
        seed=0,
    )  # fmt: skip
    opt = svrg(model, lr=0.05, snapshot_every=1, bn_mode=bn_mode)
    return SimpleNamespace(
        model=model, optimizer=opt, train_loader=loader, scaler=None, autocast_dtype=None,
        device=torch.device("cpu"), rule=update_rule_for(opt, model),
    )  # fmt: skip


def relative_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    diff = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True)) ** 0.5
    return diff / sum(float(y.pow(2).sum()) for y in b) ** 0.5


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_svrg_full_gradient_is_the_mean_of_the_epochs_snapshot_gradients(bn_mode):
    """Johnson & Zhang's estimator g_i(w) - g_i(w~) + mu~ is unbiased only if mu~ is the mean
    of g_i(w~) over the batches the updates draw. On class-ordered data with BN in train mode,
    a pass over unshuffled chunks (the bug this guards against) is far from that mean."""
    run = class_ordered_run(bn_mode)
    epoch = 3
    before = copy.deepcopy(run.model.state_dict())
    assert run.rule.start_epoch(run, epoch, B) == N
    snapshot = copy.deepcopy(run.model).train(bn_mode == "train")
    epoch_mean = full_gradient(snapshot, run, epoch)
    assert relative_gap(run.rule.mu, epoch_mean) < 1e-5
    unshuffled = full_gradient(copy.deepcopy(run.model).train(bn_mode == "train"), run, epoch,
                               shuffle=False)  # fmt: skip
    if bn_mode == "train":  # one class per chunk: the old pass, biased
        assert relative_gap(unshuffled, epoch_mean) > 0.1
    else:  # running statistics: the order cannot matter
        assert relative_gap(unshuffled, epoch_mean) < 1e-5
    for k, v in run.model.state_dict().items():  # the pass left the model's statistics alone
        assert torch.equal(v, before[k]), k


def test_svrg_counts_gradient_evaluations_in_metrics(tmp_path):
    cfg = tiny_cfg("optimizer=svrg", "optimizer.snapshot_every=1", "epochs=2")
    summary = train(cfg, tmp_path)
    n, steps = 512, 512 // 64
    assert summary["final"]["grad_evals"] == 2 * (n + 2 * 64 * steps)
    assert summary["final"]["samples"] == 2 * 64 * steps


def storm_reference(
    model: nn.Module, batches: list, k: float, w: float, c: float
) -> list[list[torch.Tensor]]:
    """The paper's algorithm, written out: returns the parameters after each update."""
    x_prev, d, sum_g2, eta_prev, out = None, None, 0.0, None, []
    for x, y in batches:
        current = [p.detach().clone() for p in model.parameters()]
        g = grads_at(model, x, y)
        sum_g2 += float(sum(t.pow(2).sum() for t in g))
        eta = k / (w + sum_g2) ** (1 / 3)
        if d is None:
            d = g
        else:
            g_prev = grads_at(reference_at_params(x_prev), x, y)
            a = min(1.0, c * eta_prev**2)
            d = [gi + (1 - a) * (di - gp) for gi, di, gp in zip(g, d, g_prev, strict=True)]
        with torch.no_grad():
            for p, di in zip(model.parameters(), d, strict=True):
                p.sub_(eta * di)
        x_prev, eta_prev = current, eta
        out.append([p.detach().clone() for p in model.parameters()])
    return out


@pytest.mark.parametrize("c", [100.0, 1e6])  # a_t < 1, and a_t capped at 1 (plain SGD steps)
def test_storm_follows_the_papers_updates(c):
    model = linear()
    run = tiny_run(model, storm(model, k=0.5, w=0.1, c=c))
    batches = list(run.train_loader.batches(0, B))[:5]
    expected = storm_reference(linear(), batches, k=0.5, w=0.1, c=c)
    for step, (x, y) in enumerate(batches):
        run.optimizer.zero_grad(set_to_none=True)
        _, _, evals = run.rule.gradients(run, x, y, None)
        assert evals == (B if step == 0 else 2 * B)
        run.optimizer.step()
        for p, e in zip(model.parameters(), expected[step], strict=True):
            torch.testing.assert_close(p.detach(), e)


@pytest.mark.parametrize(("key", "value"), [("k", 0.0), ("w", -1.0), ("c", "x")])
def test_storm_refuses_bad_constants(key, value):
    with pytest.raises(ConfigError, match=f"optimizer.{key}="):
        storm(linear(), **{key: value})


def test_svrg_refuses_unknown_bn_mode():
    with pytest.raises(ConfigError, match="optimizer.bn_mode=frozen"):
        svrg(linear(), bn_mode="frozen")

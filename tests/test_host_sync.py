"""No update reads a tensor back to the host (issue 20, "Fast on a GPU").

Each read (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``, ...) makes the host
wait until the GPU has run everything queued, so a read per update keeps the GPU idle while
Python prepares the next one. The trainer reads the epoch's loss and accuracy, summed on the
device, only at its sync points (trainrepro.engine.train.SYNC_EVERY, a checkpoint, a stop, the
epoch's end).

:class:`HostReads` counts the reads that trainrepro's own code makes, by call site. Reads inside
torch are not counted on the CPU: torch keeps its optimizers' step counters as CPU tensors (no
device is waited for) and reads them each step. A read of a tensor on another device is counted
wherever it comes from, so on a GPU machine the CUDA cases below check torch's part too.

No optimizer option needs a read in its step: none is exempted below.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from support import make_cfg, tiny_model

import trainrepro
from trainrepro.engine import train as train_module
from trainrepro.engine.train import train
from trainrepro.optim import factory as optim
from trainrepro.optim.update_rules import update_rule_for

PACKAGE = os.path.realpath(Path(trainrepro.__file__).parent) + os.sep
# Every way Python code turns a tensor into a host value; __format__ and __repr__ (f-strings,
# logging) read through .item()/.tolist() inside torch, so they are counted where they are called.
READS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__float__",
    "__int__",
    "__bool__",
    "__index__",
    "__format__",
    "__repr__",
)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    ),
]


@functools.cache
def _ours(filename: str) -> bool:
    return os.path.realpath(filename).startswith(PACKAGE)


class HostReads:
    """Patch torch.Tensor's reads to count, by (module, function, read), those made by
    trainrepro's code, and those of tensors that are not on the CPU, from anywhere."""

    def __init__(self) -> None:
        self.sites: Counter[tuple[str, str, str]] = Counter()

    def __enter__(self) -> HostReads:
        self.saved = {name: torch.Tensor.__dict__.get(name) for name in READS}
        for name in READS:
            setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            if original is None:
                delattr(torch.Tensor, name)  # back to torch._C.TensorBase's
            else:
                setattr(torch.Tensor, name, original)

    def _counted(self, name: str, original):  # noqa: ANN202
        sites = self.sites

        def counted(tensor, *args, **kwargs):  # noqa: ANN001, ANN202
            caller = sys._getframe(1).f_code
            if _ours(caller.co_filename) or tensor.device.type != "cpu":
                where = os.path.relpath(os.path.realpath(caller.co_filename), PACKAGE)
                sites[(where, caller.co_name, name)] += 1
            return original(tensor, *args, **kwargs)

        return counted


# ------------------------------------------------------------------ the counter itself

EXPRESSIONS = {
    "item": "t.item()",
    "float": "float(t)",
    "int": "int(t)",
    "bool": "bool(t)",
    "branch": "1 if t > 0 else 0",
    "tolist": "t.tolist()",
    "cpu": "t.cpu()",
    "numpy": "t.numpy()",
    "index": "[0, 1, 2][t]",
    "f-string": "f'{t:.3f}'",
    "str": "str(t)",
}


@pytest.mark.parametrize("expression", EXPRESSIONS.values(), ids=list(EXPRESSIONS))
def test_the_counter_sees_a_read_in_our_code_and_not_in_others(expression):
    """The same line, compiled as if in trainrepro/engine/train.py, then as a test's."""
    t = torch.tensor(1.0 if "f'" in expression else 1)
    in_package = compile(expression, os.path.join(PACKAGE, "engine", "train.py"), "eval")
    elsewhere = compile(expression, __file__, "eval")
    with HostReads() as reads:
        eval(in_package, {"t": t})
    assert sum(reads.sites.values()) == 1, reads.sites
    with HostReads() as reads:
        eval(elsewhere, {"t": t})
    assert not reads.sites
    assert "item" not in torch.Tensor.__dict__  # the patches are gone


# ------------------------------------------------------------------ (a) every optimizer's step

# Every registered option, and variants whose step takes other branches.
SHRUNK = {"adam_2k": {"k": 2}}  # Adam-2k's default moves nothing for 2000 updates
VARIANTS = {
    "sgd-nesterov-target": ("sgd", {"nesterov": True, "norm_decay_target": 1.0}),
    "adam-amsgrad-decoupled": ("adam", {"amsgrad": True, "decoupled_weight_decay": True}),
    "adamw-target": ("adamw", {"norm_decay_target": 1.0}),
    "radam-decoupled": ("radam", {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    "adam_2k-shifted": ("adam_2k", {"k": 2, "bias_correction": "shifted"}),
    "lars-clip": ("lars", {"trust_clip": True, "adapt_norm_and_bias": True}),
    "lamb-clip": ("lamb", {"trust_clip": True, "max_grad_norm": 1.0}),
    "rmsprop-momentum": ("rmsprop", {"momentum": 0.9, "centered": True}),
    **{f"{name}-fused": (name, {"fused": True}) for name in ("sgd", "adam", "adamw", "adagrad")},
}
CASES = {name: (name, SHRUNK.get(name, {})) for name in sorted(optim.optimizers())} | VARIANTS


def batch(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    return x.to(device), y.to(device)


class OneBatch:
    """The whole training set is one batch: what SVRG's full-gradient pass reads."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __len__(self) -> int:
        return 16

    def batches(self, epoch: int, batch_size: int, **kwargs):
        yield batch(self.device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "kwargs"), CASES.values(), ids=list(CASES))
def test_an_optimizer_update_reads_nothing_back(name, kwargs, device):
    """Its update rule's gradients and its step, five times; the epoch's start (SVRG's full
    pass) is outside the update."""
    model = tiny_model().to(device)
    opt = optim.create_optimizer(name, model, **kwargs)
    run = SimpleNamespace(
        model=model,
        optimizer=opt,
        scaler=None,
        autocast_dtype=None,
        device=torch.device(device),
        train_loader=OneBatch(device),
    )
    rule = update_rule_for(opt, model)
    rule.start_epoch(run, 0, 16)
    before = [p.detach().clone() for p in model.parameters()]
    with HostReads() as reads:
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            rule.gradients(run, *batch(device), None)
            opt.step()
    assert not reads.sites, f"host reads per 5 updates: {dict(reads.sites)}"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["agc", "clip_norm"])
def test_a_clipping_callback_counts_on_the_device_and_reads_at_the_epoch_end(name, device):
    """AGC and global-norm clipping count what they clip on the device; the count is read
    once, at the epoch's end (the metrics row) or a checkpoint (state_dict)."""
    from trainrepro.instruments.clipping import agc, clip_norm

    model = tiny_model().to(device)
    callback = agc(model, clipping=1e-4) if name == "agc" else clip_norm(model, max_norm=1e-4)
    with HostReads() as reads:
        for _ in range(5):
            model.zero_grad(set_to_none=True)
            x, y = batch(device)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            callback.after_backward(None, 1)
    assert not reads.sites, f"host reads per 5 updates: {dict(reads.sites)}"
    state = callback.state_dict()
    assert isinstance(state["clipped"], int) and state["clipped"] > 0  # everything was clipped
    row: dict = {}
    callback.end_epoch(None, 1, row)
    assert 0 < next(iter(row.values())) <= 1


# ------------------------------------------------------------------ (b) the trainer's update

# lenet5 on 1024 synthetic images, batch 32: 32 updates in the epoch; runs stop after N and 2N.
RUN = (
    "model=lenet5",
    "dataset=synthetic",
    "dataset.num_train=1024",
    "dataset.num_test=64",
    "dataset.image_size=16",
    "batch_size=32",
    "eval_batch_size=64",
    "epochs=1",
    "checkpoint_every=null",
    "progress=false",
)
LOOPS = {
    "sgd-cyclic-momentum": (
        "schedule=cyclic",
        "schedule.half_period=0.25",
        "schedule.min_momentum=0.85",
        "schedule.max_momentum=0.95",
    ),
    "radam-micro-batches": ("schedule=cosine", "optimizer=radam", "max_micro_batch=8"),
    "storm": ("schedule=constant", "optimizer=storm"),
}
N, SYNC_EVERY = 8, 5  # periodic sync points at update 5 (N updates); 5, 10, 15 (2N)
SYNC_SITE = ("engine/train.py", "_totals", "item")  # the loss sum and the correct count


def _reads_of_a_run(tmp_path: Path, stop_after: int, device: str, overrides) -> Counter:
    cfg = make_cfg(*RUN, f"device={device}", *overrides)
    with HostReads() as reads:
        summary = train(cfg, tmp_path / str(stop_after), stop_after_update=stop_after)
    assert summary["position"]["updates"] == stop_after
    return reads.sites


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("overrides", LOOPS.values(), ids=list(LOOPS))
def test_the_trainer_reads_back_only_at_its_sync_points(tmp_path, monkeypatch, overrides, device):
    """Runs of N and 2N updates, each stopped at its last (a sync point), read the same apart
    from the periodic sync points that the longer run passes: two reads each, in _totals.
    An extra read per update anywhere in the loop, the rules or the steps shows as a site
    whose count grows with the updates."""
    monkeypatch.setattr(train_module, "SYNC_EVERY", SYNC_EVERY)
    short = _reads_of_a_run(tmp_path, N, device, overrides)
    long = _reads_of_a_run(tmp_path, 2 * N, device, overrides)
    extra_syncs = (2 * N - 1) // SYNC_EVERY - (N - 1) // SYNC_EVERY
    grown = {site: long[site] - short[site] for site in long | short if long[site] != short[site]}
    assert grown == {SYNC_SITE: 2 * extra_syncs}, f"reads that grow with the updates: {grown}"
    assert short[SYNC_SITE] > 0  # the counter saw the sync points themselves

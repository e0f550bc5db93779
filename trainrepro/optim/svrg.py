"""SVRG (Johnson & Zhang 2013, "Accelerating Stochastic Gradient Descent using Predictive
Variance Reduction", NIPS): every ``snapshot_every`` epochs, take a snapshot w~ = w and its
full training-set gradient mu~; each update then applies

    g = g_i(w) - g_i(w~) + mu~

with g_i both gradients on the same batch (and the same augmentation), as plain SGD
(optionally with momentum, as Defazio & Bottou 2019's ``recompute_svrg`` does). Gradient
evaluations: N for each full pass (the images of the epoch's full batches), 2B per update
of batch B. mu~ is the mean over those batches of the batch-mean gradient.

Batch norm (the report's hypothesis is that it biases SVRG): ``bn_mode`` says which statistics
the snapshot normalizes with, for its full gradient and its per-batch gradients alike, so that
g_i(w~) - mu~ has mean zero over the batches of an epoch:

- ``train`` (default, Defazio & Bottou's standard): the batch's own statistics; the full pass
  runs over the epoch's own batches, so each g_i(w~) there is the one the updates subtract.
  The snapshot keeps its own copy of the BN running statistics, so the snapshot passes never
  touch the model's inference statistics.
- ``eval``: the running statistics the model had when the snapshot was taken (and no dropout).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainrepro.errors import ConfigError, check_int, check_number
from trainrepro.optim.params import check_common, param_groups
from trainrepro.optim.update_rules import UpdateRule, backward, trainable

if TYPE_CHECKING:
    from trainrepro.engine.run import Run

BN_MODES = ("train", "eval")
Tensor = torch.Tensor


class SVRG(torch.optim.SGD):
    """SGD whose gradients come from :class:`SVRGRule` (the variance-reduced estimate)."""

    def __init__(
        self, params: Any, *, snapshot_every: int = 1, bn_mode: str = "train", **sgd: Any
    ) -> None:
        super().__init__(params, **sgd)
        self.snapshot_every = snapshot_every
        self.bn_mode = bn_mode

    def update_rule(self, model: nn.Module) -> SVRGRule:
        return SVRGRule(model, snapshot_every=self.snapshot_every, bn_mode=self.bn_mode)


class SVRGRule(UpdateRule):
    """The snapshot, its full gradient, and g_i(w) - g_i(w~) + mu~ at each update."""

    def __init__(self, model: nn.Module, *, snapshot_every: int, bn_mode: str) -> None:
        self.snapshot = copy.deepcopy(model)  # holds w~ and its own normalization buffers
        self.snapshot_every = snapshot_every
        self.bn_mode = bn_mode
        self.mu: list[Tensor] | None = None

    def _mode(self) -> nn.Module:
        return self.snapshot.train(self.bn_mode == "train")

    def start_epoch(
        self, run: Run, epoch: int, batch_size: int, max_micro_batch: int | None = None
    ) -> int:
        if run.scaler is not None:
            raise ConfigError("precision", "fp16", "svrg does not support fp16 loss scaling")
        if epoch % self.snapshot_every:
            return 0
        self.snapshot.load_state_dict(run.model.state_dict())
        taken = copy.deepcopy(self.snapshot.state_dict())
        snap = self._mode()
        snap.zero_grad(set_to_none=True)
        # mu~ is the mean of g_i(w~) over the very batches this epoch's updates draw (same
        # order, same augmentation, same micro-batches), so g_i(w) - g_i(w~) + mu~ is unbiased
        # even when batch statistics depend on which images share a batch: image folders are
        # stored class by class, and an unshuffled pass would normalize one class at a time.
        n_batches = evals = 0
        for x, y in run.train_loader.batches(epoch, batch_size):
            backward(run, snap, x, y, max_micro_batch)
            n_batches += 1
            evals += len(y)
        self.mu = [_grad(p) / max(n_batches, 1) for p in trainable(snap)]
        self.snapshot.load_state_dict(taken)  # the pass moved the BN running statistics
        return evals

    def gradients(
        self, run: Run, x: Tensor, y: Tensor, max_micro_batch: int | None
    ) -> tuple[Tensor, Tensor, int]:
        if self.mu is None:
            raise RuntimeError("SVRGRule.gradients before the first start_epoch")
        logits, loss = backward(run, run.model, x, y, max_micro_batch)
        snap = self._mode()
        snap.zero_grad(set_to_none=True)
        backward(run, snap, x, y, max_micro_batch)
        for p, s, mu in zip(trainable(run.model), trainable(snap), self.mu, strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.sub_(_grad(s)).add_(mu)
        return logits, loss, 2 * len(y)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot.state_dict(), "mu": self.mu}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshot.load_state_dict(state["snapshot"])
        self.mu = state["mu"]


def _grad(p: Tensor) -> Tensor:
    return p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)


def svrg(
    model: nn.Module,
    *,
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    snapshot_every: int = 3,
    bn_mode: str = "train",
    decay_norm_and_bias: bool = True,
) -> SVRG:
    """SVRG (Johnson & Zhang 2013): snapshot and full gradient every ``snapshot_every`` epochs."""
    check_common(lr, weight_decay)
    check_number("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
    check_int("optimizer.snapshot_every", snapshot_every, 1)
    if bn_mode not in BN_MODES:
        raise ConfigError("optimizer.bn_mode", bn_mode, f"must be one of {', '.join(BN_MODES)}")
    return SVRG(
        param_groups(model, weight_decay, decay_norm_and_bias),
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        snapshot_every=snapshot_every,
        bn_mode=bn_mode,
    )

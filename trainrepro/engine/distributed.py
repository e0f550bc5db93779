"""Data-parallel training over processes started by torchrun, with torch.distributed only.

``torchrun --nproc_per_node=N -m trainrepro ...`` starts N copies of the same run; each reads
RANK / WORLD_SIZE / LOCAL_RANK from its environment. The global batch B of the schedule is
split into N contiguous slices of the epoch's order (trainrepro.data.loader), each rank
computes the mean-loss gradient of its slice, and the gradients are averaged with
``all_reduce`` before every step, so N ranks take the same step as one process with batch B
(up to float rounding). Only rank 0 writes the run directory; checkpoints hold what one
process needs, so a run resumes on any number of ranks.

Batch statistics are per rank unless ``normalization.sync=true``: then batch norm normalizes
with the statistics of the whole global batch (torch.nn.SyncBatchNorm on CUDA; on CPU, where
torch's implementation refuses to run, :class:`CPUSyncBatchNorm`, which reduces the per-channel
sums with torch.distributed's differentiable ``all_reduce``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

from trainrepro.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_world = World()


def world() -> World:
    return _world


def is_main() -> bool:
    """Whether this process writes files (always true without torchrun)."""
    return _world.is_main


def init_from_env() -> World:
    """Join the process group torchrun describes in the environment (once); else one rank."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or _world.active:
        return _world
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    _world = World(rank=rank, size=size, local_rank=local_rank)
    return _world


def average_gradients(model: nn.Module) -> None:
    """Replace every ``.grad`` by its mean over the ranks (one flat all_reduce)."""
    if not _world.active:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_over_ranks(*values: torch.Tensor) -> list[torch.Tensor]:
    """Each value summed over the ranks (unchanged with one rank)."""
    if not _world.active:
        return list(values)
    out = []
    for v in values:
        v = v.clone()
        dist.all_reduce(v)
        out.append(v)
    return out


def any_rank(*flags: bool) -> list[bool]:
    """Each flag or-ed over the ranks, so every rank stops (or diverges) at the same update."""
    if not _world.active:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x) for x in t.tolist()]


def broadcast_parameters(model: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not _world.active:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def prepare(model: nn.Module, batch_sizes: list[int], *, sync: bool = False) -> None:
    """Check that every epoch's global batch splits evenly over the ranks, switch batch norm
    to global statistics if asked, and start every rank from rank 0's weights."""
    for epoch, b in enumerate(batch_sizes):
        if b % _world.size:
            raise ConfigError(
                "batch_size", b, f"must split evenly over {_world.size} ranks (epoch {epoch})"
            )
    if sync:
        convert_sync_batchnorm(model)
    broadcast_parameters(model)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm over the global batch of all ranks, for CPU (gloo) runs.

    Each rank sums its slice per channel, then the squared deviations from the global mean;
    differentiable all_reduces make both global, so forward and backward are those of one
    BatchNorm2d over the concatenated batch, running statistics included (unbiased global
    variance, as BatchNorm2d keeps). At evaluation, or with one rank, it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _world.active):
            return super().forward(x)
        c = x.shape[1]
        # Two passes (mean, then squared deviations), as accurate as BatchNorm2d's own; a
        # one-pass E[x^2] - E[x]^2 in float32 loses digits and drifts from one process.
        n_local = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        first = differentiable_all_reduce(torch.cat([x.sum((0, 2, 3)), n_local]))
        count = first[-1]
        mean = first[:c] / count
        centred = x - mean.view(1, c, 1, 1)
        var = differentiable_all_reduce((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = centred * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm2d layers -> global-batch statistics (torch's SyncBatchNorm on CUDA)."""
    if torch.cuda.is_available():
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_bn(model)


def _swap_bn(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        sync = CPUSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        # The same Parameter and buffer objects, so an optimizer built earlier still holds them.
        sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        return sync
    for name, child in module.named_children():
        setattr(module, name, _swap_bn(child))
    return module

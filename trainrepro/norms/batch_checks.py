"""Which batch sizes a normalization can train on, checked before training starts.

Batch-statistics norms (bn, ghost_bn) need at least two examples per batch and micro-batch;
ghost batch norm needs whole ghost batches and Batch-Group Norm a whole number of examples per
batch group, in every batch and every micro-batch of gradient accumulation. build.py calls
``check_batch`` with each epoch's batch size, so a schedule that grows the batch is checked too.
"""

from __future__ import annotations

import math

from torch import nn

from trainrepro.errors import ConfigError
from trainrepro.norms.batch_group_norm import BatchGroupNorm2d
from trainrepro.norms.factory import (
    BatchGroupNormFactory,
    BatchNormFactory,
    GhostBatchNormFactory,
    NormFactory,
)
from trainrepro.norms.ghost_bn import GhostBatchNorm2d


def ghost_batch_size_of(model_or_factory: nn.Module | NormFactory) -> int | None:
    """The number every training batch must be a multiple of, or None without ghost batch norm.

    Takes a model (its ``GhostBatchNorm2d`` layers; the lcm if they differ) or a norm factory.
    """
    if isinstance(model_or_factory, GhostBatchNormFactory):
        return model_or_factory.ghost_batch_size
    if not isinstance(model_or_factory, nn.Module):
        return None
    sizes = {
        m.ghost_batch_size for m in model_or_factory.modules() if isinstance(m, GhostBatchNorm2d)
    }
    return math.lcm(*sizes) if sizes else None


def batch_divisor_of(model_or_factory: nn.Module | NormFactory) -> tuple[str, int] | None:
    """(config key, n): every training batch and micro-batch must be a multiple of n.

    Ghost BN needs whole ghost batches (the lcm of a model's ghost sizes), BGN a whole number of
    examples per batch group; None for the other norms.
    """
    g = ghost_batch_size_of(model_or_factory)
    if g is not None:
        return "normalization.ghost_batch_size", g
    if isinstance(model_or_factory, BatchGroupNormFactory):
        return "normalization.batch_groups", model_or_factory.batch_groups
    if isinstance(model_or_factory, nn.Module):
        sizes = {
            m.batch_groups for m in model_or_factory.modules() if isinstance(m, BatchGroupNorm2d)
        }
        if sizes:
            return "normalization.batch_groups", math.lcm(*sizes)
    return None


def uses_batch_statistics(model_or_factory: nn.Module | NormFactory) -> bool:
    """Whether training normalizes each channel over the examples of a batch (bn, ghost_bn),
    so that a batch (or ghost batch) of one example has no statistics to normalize with."""
    if isinstance(model_or_factory, BatchNormFactory | GhostBatchNormFactory):
        return True
    if isinstance(model_or_factory, nn.Module):
        return any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model_or_factory.modules()
        )
    return False


def _pieces(batch_size: int, max_micro_batch: int | None) -> list[int]:
    """The sizes the trainer feeds the model: the batch, or its micro-batches (last smaller)."""
    if max_micro_batch is None or max_micro_batch >= batch_size:
        return [batch_size]
    full, rest = divmod(batch_size, max_micro_batch)
    return [max_micro_batch] * full + ([rest] if rest else [])


def check_batch(
    model_or_factory: nn.Module | NormFactory,
    batch_size: int,
    *,
    max_micro_batch: int | None = None,
) -> None:
    """Raise a ConfigError unless the norm can train on batches of ``batch_size``.

    With gradient accumulation the batch is split into pieces of ``max_micro_batch`` (the last
    one smaller), and every piece is checked too. Two rules: batch-statistics norms (bn,
    ghost_bn) refuse pieces of one example, which have no batch statistics (torch itself only
    fails when N*H*W == 1, e.g. a 1x1 feature map, and otherwise would train silently on
    per-example statistics that evaluation never sees); and ghost batches / BGN's batch groups
    must tile every piece. For the trainer to call with each epoch's batch size before training.
    """
    pieces = _pieces(batch_size, max_micro_batch)
    split = len(pieces) > 1
    if uses_batch_statistics(model_or_factory) and min(pieces) == 1:
        if not split:
            raise ConfigError(
                "batch_size",
                batch_size,
                "batch-statistics normalization (bn, ghost_bn) has no statistics for a batch of "
                "1 example; use batch_size >= 2 or normalization=gn/ln/in/bgn",
            )
        raise ConfigError(
            "max_micro_batch",
            max_micro_batch,
            f"splits the batch size {batch_size} into a micro-batch of 1 example, which "
            "batch-statistics normalization (bn, ghost_bn) cannot normalize",
        )
    divisor = batch_divisor_of(model_or_factory)
    if divisor is None:
        return
    key, g = divisor
    if batch_size % g:
        raise ConfigError(key, g, f"does not divide the batch size {batch_size}")
    if split and any(piece % g for piece in pieces):
        raise ConfigError(
            "max_micro_batch",
            max_micro_batch,
            f"must be a multiple of {key}={g} to split the batch size {batch_size}",
        )


# The earlier name, kept for callers that only knew about ghost batches.
check_ghost_batch = check_batch

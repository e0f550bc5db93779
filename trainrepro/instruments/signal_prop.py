"""Signal-propagation measurements (Brock, De & Smith, ICLR 2021, arXiv:2101.08692, Sec. 3, Fig. 1).

At initialization, for one fixed batch, the output of every residual block is summarized by the
statistics of DeepMind's ``signal_metrics`` (nfnets/base.py): the average over channels of the
squared channel mean, mean_c (E_{N,H,W}[x_c])^2, and of the channel variance, mean_c
Var_{N,H,W}[x_c]. A healthy network keeps both flat with depth (BN-ResNet) or growing and reset
at transitions by design (NF-ResNet); an unnormalized ResNet's mean shift grows with depth.

Works on any model of the registry: forward hooks on its residual blocks, the modules whose class
name ends in "Block", "Bottleneck" or "Residual" (outermost only); a model without such blocks
(lenet5) is measured after each conv instead. The model runs in training mode, as in training
(batch statistics for BN), under no_grad.

    python scripts/plot_signal_propagation.py --depth 110 --out results/nfnet-quick/spp

The figure is drawn by ``trainrepro.reproduce.figures.signal_propagation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

BLOCK_SUFFIXES = ("Block", "Bottleneck", "Residual")
# The paper's comparison (Fig. 1) on the CIFAR ResNet: label, model, normalization.
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("BN-ResNet", "resnet_cifar", "bn"),
    ("ResNet, no normalization", "resnet_cifar", "none"),
    ("NF-ResNet", "nf_resnet", "none"),
)


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost residual blocks in forward order, else every conv (see module doc)."""
    blocks: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        is_block = type(module).__name__.endswith(BLOCK_SUFFIXES)
        if is_block and not any(name.startswith(b + ".") for b, _ in blocks):
            blocks.append((name, module))
    if not blocks:
        blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return blocks


def channel_stats(x: torch.Tensor) -> tuple[float, float]:
    """(average squared channel mean, average channel variance) of an (N, C, H, W) tensor."""
    x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
    return float(x.mean(dim=1).pow(2).mean()), float(x.var(dim=1, unbiased=False).mean())


@torch.no_grad()
def signal_propagation(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """One row per residual block: ``block`` (1-based), ``name``, ``avg_sq_mean``, ``avg_var``."""
    rows: list[dict[str, object]] = []
    handles = []
    for name, module in residual_blocks(model):

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            sq_mean, var = channel_stats(out)
            rows.append({"block": len(rows) + 1, "name": name, "avg_sq_mean": sq_mean,
                         "avg_var": var})  # fmt: skip

        handles.append(module.register_forward_hook(hook))
    try:
        model.train()(x)
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame(rows)


def random_batch(batch: int = 64, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """A fixed N(0, 1) batch: normalized images have zero mean and unit variance per channel."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, image_size, image_size, generator=gen)


def measure(
    depth: int = 110,
    variants: Sequence[tuple[str, str, str]] = VARIANTS,
    batch: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """SPP rows of every variant (label, model, normalization) at ``depth``, one init seed."""
    from trainrepro.models import create_model
    from trainrepro.norms.factory import create_norm

    x = random_batch(batch, seed=seed)
    frames = []
    for label, model_name, norm in variants:
        torch.manual_seed(seed)
        model = create_model(
            model_name, depth=depth, num_classes=10, in_channels=3, image_size=32,
            norm_layer=create_norm(norm),
        )  # fmt: skip
        df = signal_propagation(model, x)
        df.insert(0, "variant", label)
        df.insert(1, "model", model_name)
        df.insert(2, "normalization", norm)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["depth"] = depth
    out["batch"] = batch
    return out

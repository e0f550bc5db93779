"""Ghost Batch Normalization (Hoffer, Hubara & Soudry, NeurIPS 2017, "Train longer, generalize
better", Sec. 4), as used by Smith et al. (ICLR 2018, "Don't Decay the Learning Rate, Increase
the Batch Size") with ghost batches of 128.

In training, a batch of ``B = G * g`` samples is normalized as ``G`` independent "ghost"
batches of ``ghost_batch_size = g``, each with its own mean and variance, so the noise that
batch statistics add stays that of a batch of ``g`` however large the real batch grows.

Running statistics: each ghost batch is one BatchNorm step, applied in order. After a call,
``running_mean``/``running_var`` (unbiased ghost-batch variance, as torch keeps) and
``num_batches_tracked`` are what ``G`` successive ``BatchNorm2d`` calls on the ghost batches
would leave, i.e. momentum is applied once per ghost batch. Because ghost batches never straddle
micro-batches of a multiple of ``g``, a batch processed at once and the same batch processed as
such micro-batches in order (gradient accumulation) give the same outputs, the same gradients
and the same running statistics; and the number of running-stat updates per epoch stays
``N / g`` when a schedule grows the batch. Evaluation is plain ``BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainrepro.errors import ConfigError


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics come from ghost batches of ``g`` samples.

    Same parameters, buffers and state dict as ``BatchNorm2d``; ``ghost_batch_size`` must
    divide every training batch (else a ConfigError naming ``normalization.ghost_batch_size``).
    """

    def __init__(
        self,
        num_features: int,
        ghost_batch_size: int = 128,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
        )
        if isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int):
            raise TypeError(f"ghost_batch_size must be an int, got {ghost_batch_size!r}")
        if ghost_batch_size < 1:
            raise ValueError(f"ghost_batch_size must be >= 1, got {ghost_batch_size}")
        self.ghost_batch_size = ghost_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        batch, channels = x.shape[:2]
        g = self.ghost_batch_size
        if batch % g:
            raise ConfigError(
                "normalization.ghost_batch_size", g, f"does not divide the batch size {batch}"
            )
        ghosts = batch // g
        if ghosts == 1:
            return super().forward(x)  # exactly BatchNorm2d, running statistics included

        # Ghost k's channel c becomes channel k*C + c of a batch of g, so one batch_norm
        # kernel computes every ghost batch's statistics, output and gradient at once.
        spatial = x.shape[2:]
        xs = x.reshape(ghosts, g, channels, *spatial).transpose(0, 1)
        xs = xs.reshape(g, ghosts * channels, *spatial)
        weight = None if self.weight is None else self.weight.repeat(ghosts)
        bias = None if self.bias is None else self.bias.repeat(ghosts)
        tracking = self.track_running_stats and self.running_mean is not None
        if tracking:
            # momentum=1 leaves exactly each ghost batch's mean and unbiased variance here.
            stats_dtype = self.running_mean.dtype
            mean = torch.zeros(ghosts * channels, dtype=stats_dtype, device=x.device)
            var = torch.ones(ghosts * channels, dtype=stats_dtype, device=x.device)
            y = F.batch_norm(xs, mean, var, weight, bias, True, 1.0, self.eps)
            self._update_running_stats(mean.view(ghosts, channels), var.view(ghosts, channels))
        else:
            y = F.batch_norm(xs, None, None, weight, bias, True, 0.0, self.eps)
        y = y.reshape(g, ghosts, channels, *spatial).transpose(0, 1)
        return y.reshape(x.shape)

    def _update_running_stats(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        update_running_stats_in_order(self, means, variances)


@torch.no_grad()
def update_running_stats_in_order(
    layer: nn.modules.batchnorm._NormBase, means: torch.Tensor, variances: torch.Tensor
) -> None:
    """Apply ``G`` BatchNorm running-statistics updates in order, in closed form.

    ``means``/``variances`` are [G, C]: the statistics of G successive normalization groups
    (ghost batches here, batch groups in trainrepro/norms/batch_group_norm.py). Step k mixes in s_k
    with factor f_k: r <- (1 - f_k) r + f_k s_k. Fixed momentum m:
    r_G = (1 - m)^G r_0 + sum_k m (1 - m)^(G-1-k) s_k. momentum=None (torch's cumulative
    average, f_k = 1/(n_0 + k + 1)) telescopes to r_G = (n_0 r_0 + sum_k s_k) / (n_0 + G).
    """
    ghosts = means.shape[0]
    if layer.momentum is None:
        n0 = int(layer.num_batches_tracked.item())  # a device sync, only in this mode
        keep = n0 / (n0 + ghosts)
        weights = torch.full((ghosts,), 1.0 / (n0 + ghosts), dtype=torch.float64)
    else:
        m = float(layer.momentum)
        keep = (1.0 - m) ** ghosts
        powers = torch.arange(ghosts - 1, -1, -1, dtype=torch.float64)
        weights = m * (1.0 - m) ** powers
    weights = weights.to(device=means.device, dtype=means.dtype).unsqueeze(1)
    layer.num_batches_tracked.add_(ghosts)
    layer.running_mean.mul_(keep).add_((weights * means).sum(0))
    layer.running_var.mul_(keep).add_((weights * variances).sum(0))

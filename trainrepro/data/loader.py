"""Batch iterators whose every random draw is a pure function of (seed, epoch).

Shuffling order and augmentation parameters for an epoch come from CPU ``torch.Generator``s
seeded from (seed, epoch), so a resumed run replays the exact same batches without saving any
RNG state, and CPU and GPU runs see the same data. Augmentation is the CIFAR recipe of He et
al. 2016 ("Deep Residual Learning"): zero-pad, random crop back to size, random horizontal flip;
it runs batched on the device with index arithmetic, no per-sample Python loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from trainrepro.data.sources import load_image
from trainrepro.data.splits import (
    AnyImageSet,
    Augment,
    FileImageSet,
    ImageSet,
    derive_seed,
    num_batches,
)

Tensor = torch.Tensor


def augment_batch(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Crop each uint8 image [B,C,H,W] from its zero-padded version at offset (dy, dx) in
    [0, 2*padding], mirrored where ``flip``; one gather, so it costs the same on any device."""
    b, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    if padding:
        padded = x.new_zeros(b, c, hp, wp)
        padded[:, :, padding : padding + h, padding : padding + w] = x
    else:
        padded = x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.view(b, 1) + ar_h.view(1, h)
    cols = dx.view(b, 1) + torch.where(flip.view(b, 1), (w - 1 - ar_w).view(1, w), ar_w.view(1, w))
    flat = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, hp * wp), 2, flat).view(b, c, h, w)


class _Pipeline:
    """Order, augmentation draws and normalization shared by both loaders."""

    def __init__(
        self,
        n: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        augment: Augment | None,
        seed: int,
    ) -> None:
        self.n = n
        self.device = torch.device(device)
        self.augment = augment
        self.seed = int(seed)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ValueError(f"std must be > 0, got {tuple(std)}")
        # (x/255 - mean)/std folded into one multiply-add.
        self._scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._shift = (-mean_t / std_t).to(self.device)

    def __len__(self) -> int:
        return self.n

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        return num_batches(self.n, batch_size, drop_last)

    def _order(self, epoch: int, shuffle: bool) -> Tensor:
        if not shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "order"))
        return torch.randperm(self.n, generator=g)

    def _draws(self, epoch: int) -> tuple[Tensor, Tensor, Tensor] | None:
        """Per-position crop offsets and flips for the whole epoch (independent of batch size)."""
        a = self.augment
        if a is None or (a.crop_padding == 0 and not a.hflip):
            return None
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "augment"))
        dy = torch.randint(0, 2 * a.crop_padding + 1, (self.n,), generator=g)
        dx = torch.randint(0, 2 * a.crop_padding + 1, (self.n,), generator=g)
        flip = torch.rand(self.n, generator=g) < 0.5
        if not a.hflip:
            flip.zero_()
        return dy.to(self.device), dx.to(self.device), flip.to(self.device)

    def _finish(self, x: Tensor, draws: tuple[Tensor, Tensor, Tensor] | None, pos: slice) -> Tensor:
        if draws is not None:
            dy, dx, flip = (d[pos] for d in draws)
            x = augment_batch(x, dy, dx, flip, self.augment.crop_padding)  # type: ignore[union-attr]
        return x.float().mul_(self._scale).add_(self._shift)


class DeviceLoader(_Pipeline):
    """Batches from a uint8 image tensor that lives on the device (moved there once)."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        augment: Augment | None,
        seed: int,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(len(images), mean=mean, std=std, device=device, augment=augment, seed=seed)
        self.images = images.to(self.device)
        self.labels = labels.to(device=self.device, dtype=torch.int64)

    def batches(
        self,
        epoch: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalized float32 [B,C,H,W] and int64 labels; ``start_batch`` skips ahead cheaply
        (e.g. a mid-epoch resume) and leaves the remaining batches unchanged. ``shard=(rank,
        world)`` yields only that rank's contiguous slice of each batch
        (trainrepro.engine.distributed)."""
        nb = self.num_batches(batch_size, drop_last)
        order = self._order(epoch, shuffle).to(self.device)
        draws = self._draws(epoch)
        for i in range(start_batch, nb):
            pos = _shard(i * batch_size, min((i + 1) * batch_size, self.n), shard)
            idx = order[pos]
            yield self._finish(self.images[idx], draws, pos), self.labels[idx]


def _shard(start: int, stop: int, shard: tuple[int, int]) -> slice:
    """Rank ``shard[0]``'s contiguous part of positions [start, stop) split ``shard[1]`` ways."""
    rank, world = shard
    if world == 1:
        return slice(start, stop)
    per = (stop - start) // world
    return slice(start + rank * per, start + (rank + 1) * per)


class _FileDataset(Dataset):
    def __init__(self, files: FileImageSet) -> None:
        self.paths = files.paths
        self.labels = files.labels
        self.size = files.image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(load_image(self.paths[i], self.size)).permute(2, 0, 1).contiguous()
        return x, self.labels[i]


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class StreamingLoader(_Pipeline):
    """Same API as DeviceLoader for file-backed sets: worker processes decode and resize each
    image (PIL), the collated uint8 batch is augmented and normalized on the device."""

    def __init__(
        self,
        files: FileImageSet,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        augment: Augment | None,
        seed: int,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(len(files), mean=mean, std=std, device=device, augment=augment, seed=seed)
        self.dataset = _FileDataset(files)
        self.num_workers = default_workers() if num_workers is None else num_workers

    def batches(
        self,
        epoch: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """As DeviceLoader.batches; the order is a fixed list, so worker timing cannot change it."""
        nb = self.num_batches(batch_size, drop_last)
        if start_batch >= nb:
            return
        # Each batch's positions in the epoch order (this rank's slice of them), fixed up front.
        spans = [
            _shard(i * batch_size, min((i + 1) * batch_size, self.n), shard)
            for i in range(start_batch, nb)
        ]
        order = self._order(epoch, shuffle)
        sampler = [int(order[p]) for span in spans for p in range(span.start, span.stop)]
        draws = self._draws(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=spans[0].stop - spans[0].start if drop_last else batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
        )
        for span, (x, y) in zip(spans, loader, strict=True):
            x = x.to(self.device, non_blocking=True)
            yield self._finish(x, draws, span), y.to(self.device, non_blocking=True)


def make_loader(
    imageset: AnyImageSet,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    augment: Augment | None,
    seed: int,
) -> DeviceLoader | StreamingLoader:
    """DeviceLoader for an in-memory ImageSet, StreamingLoader for a FileImageSet."""
    if isinstance(imageset, ImageSet):
        return DeviceLoader(
            imageset.images,
            imageset.labels,
            mean=mean,
            std=std,
            device=device,
            augment=augment,
            seed=seed,
        )
    if isinstance(imageset, FileImageSet):
        return StreamingLoader(
            imageset, mean=mean, std=std, device=device, augment=augment, seed=seed
        )
    raise TypeError(f"expected ImageSet or FileImageSet, got {type(imageset).__name__}")

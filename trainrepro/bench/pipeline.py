"""The data-path part of ``make bench``: the on-device path against a conventional one.

Both pipelines train the same model on the same images with the same augmentation
(pad-and-random-crop, horizontal flip, normalization):

- device: ``DeviceLoader`` — the uint8 dataset lives on the training device; augmentation is
  batched there (this project's path);
- dataloader: a ``torch.utils.data.Dataset`` returning PIL images through
  ``torchvision.transforms`` in ``DataLoader`` worker processes (how torchvision's CIFAR
  examples train).

Each pipeline runs a warm-up window, then several timed windows of a fixed number of updates;
the figure is the median images/s over windows, and the ratio device/dataloader is reported,
with each path's TFLOP/s and MFU (trainrepro.bench.flops).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from trainrepro.bench.flops import utilisation
from trainrepro.bench.peak import peak_precision
from trainrepro.bench.speed import build_model, flops_per_image, make_step
from trainrepro.data.loader import DeviceLoader
from trainrepro.data.splits import Augment, DataSplits


class TransformDataset(Dataset):
    """Per-sample PIL + torchvision transforms over an in-memory uint8 array."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, data: DataSplits) -> None:
        from torchvision import transforms

        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC, as PIL wants
        self.labels = labels.tolist()
        self.mode = "L" if images.shape[1] == 1 else "RGB"
        aug = data.augment or Augment(crop_padding=4, hflip=True)
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(data.image_size, padding=aug.crop_padding),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(data.mean, data.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.images[i]
        image = Image.fromarray(image[..., 0] if self.mode == "L" else image, self.mode)
        return self.transform(image), self.labels[i]


def time_windows(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    step,
    *,
    device: torch.device,
    batch_size: int,
    windows: int,
    steps: int,
) -> list[float]:
    """Images/s of each of ``windows`` windows of ``steps`` updates, after one warm-up window."""
    rates = []
    for w in range(windows + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            x, y = next(batches)
            step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if w > 0:
            rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def endless(make_epoch) -> Iterator:
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def bench_pipeline(
    name: str,
    data: DataSplits,
    *,
    device: torch.device,
    batch_size: int,
    windows: int,
    steps: int,
    workers: int,
    peaks: dict[str, float] | None = None,
) -> dict:
    """Median images/s of training ``name`` (fp32) fed by each pipeline, their ratio, and each
    one's TFLOP/s and MFU against ``peaks``."""
    model = build_model(name, data, device)
    model.train()
    step = make_step(model, device, "fp32")
    fast = DeviceLoader(
        data.train.images,
        data.train.labels,
        mean=data.mean,
        std=data.std,
        device=device,
        augment=data.augment or Augment(4, True),
        seed=0,
    )
    slow = DataLoader(
        TransformDataset(data.train.images, data.train.labels, data),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    timing = dict(device=device, batch_size=batch_size, windows=windows, steps=steps)
    device_rates = time_windows(endless(lambda e: fast.batches(e, batch_size)), step, **timing)
    loader_rates = time_windows(endless(lambda e: iter(slow)), step, **timing)
    fast_ips, slow_ips = statistics.median(device_rates), statistics.median(loader_rates)
    gflop = flops_per_image(name, data, batch_size, channels_last=False) / 1e9
    precision = peak_precision("fp32", device)
    return {
        "model": name,
        "device_images_per_s": fast_ips,
        "dataloader_images_per_s": slow_ips,
        "ratio": fast_ips / slow_ips,
        "gflop_per_image": gflop,
        "peak_precision": precision,
        **utilisation(fast_ips, gflop, precision, peaks or {}, "device_"),
        **utilisation(slow_ips, gflop, precision, peaks or {}, "dataloader_"),
        "device_windows": device_rates,
        "dataloader_windows": loader_rates,
    }

"""``make bench``: training throughput of the on-device data path against a conventional one.

Both pipelines train the same model on the same images with the same augmentation
(pad-and-random-crop, horizontal flip, normalization):

- device: ``DeviceLoader`` — the uint8 dataset lives on the training device; augmentation is
  batched there (this project's path);
- dataloader: a ``torch.utils.data.Dataset`` returning PIL images through
  ``torchvision.transforms`` in ``DataLoader`` worker processes (how torchvision's CIFAR
  examples train).

Each pipeline runs a warm-up window, then several timed windows of a fixed number of updates;
the figure is the median images/s over windows, and the ratio device/dataloader is printed.
Ratios, not absolute numbers, are what carry between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from trainrepro.data.loader import DeviceLoader
from trainrepro.data.splits import Augment, DataSplits
from trainrepro.models import create_model
from trainrepro.norms import create_norm

MODELS = {
    "lenet5": {},
    "resnet18-w16": {"name": "resnet", "depth": 18, "width": 16},
}


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


def load_data(root: str | None) -> DataSplits:
    """10,000 real CIFAR-10 training images when ``root`` holds them, else synthetic ones."""
    from trainrepro.data.builders import cifar10, synthetic
    from trainrepro.errors import ConfigError

    if root:
        try:
            return cifar10(root=root, train_size=10000)
        except ConfigError as e:
            print(f"note: {e}")
    print("note: no CIFAR-10 found (set TRAINREPRO_DATA); benchmarking on synthetic images")
    return synthetic(num_train=10000, num_test=1000)


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


def bench_model(
    name: str, data: DataSplits, args: argparse.Namespace, device: torch.device
) -> dict:
    spec = dict(MODELS[name])
    model_name = spec.pop("name", name)
    torch.manual_seed(0)
    model = create_model(
        model_name,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        norm_layer=create_norm("bn"),
        **spec,
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
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
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    timing = dict(device=device, batch_size=args.batch_size, windows=args.windows, steps=args.steps)
    device_rates = time_windows(endless(lambda e: fast.batches(e, args.batch_size)), step, **timing)
    loader_rates = time_windows(endless(lambda e: iter(slow)), step, **timing)
    fast_ips, slow_ips = statistics.median(device_rates), statistics.median(loader_rates)
    return {
        "model": name,
        "device_images_per_s": fast_ips,
        "dataloader_images_per_s": slow_ips,
        "ratio": fast_ips / slow_ips,
        "device_windows": device_rates,
        "dataloader_windows": loader_rates,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="updates per timed window")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--data", default=os.environ.get("TRAINREPRO_DATA"))
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; valid: {', '.join(MODELS)}")

    data = load_data(args.data)
    print(
        f"data: {data.name}, {len(data.train.labels)} train images; device: {device}; "
        f"batch {args.batch_size}; {args.windows} windows x {args.steps} updates; "
        f"DataLoader workers: {args.workers}; torch threads: {torch.get_num_threads()}"
    )
    results = []
    print(f"{'model':<14} {'device path':>14} {'DataLoader':>14} {'ratio':>7}   (images/s, median)")
    for name in models:
        r = bench_model(name, data, args, device)
        results.append(r)
        print(
            f"{name:<14} {r['device_images_per_s']:>14.0f} "
            f"{r['dataloader_images_per_s']:>14.0f} {r['ratio']:>6.2f}x"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": str(device), "batch_size": args.batch_size, "data": data.name}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

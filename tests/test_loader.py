"""Tests for trainrepro.data.loader: the on-device loader's seeded order, batch counts,
batched augmentation and normalization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainrepro.data import Augment, DeviceLoader, augment_batch, make_loader, synthetic


@pytest.fixture(scope="module")
def shapes():
    return synthetic(num_train=1000, num_test=200, augment=False)


def small_loader(augment: Augment | None, n: int = 100, seed: int = 0) -> DeviceLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return DeviceLoader(
        images,
        torch.arange(n),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=torch.device("cpu"),
        augment=augment,
        seed=seed,
    )


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 0.25 + 0.5).mul(255).round().to(torch.uint8)


def test_loader_order_is_pure_function_of_seed_epoch():
    loader = small_loader(Augment(4, True))
    a, b = list(loader.batches(3, 16)), list(small_loader(Augment(4, True)).batches(3, 16))
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )
    other_epoch = torch.cat([y for _, y in loader.batches(4, 16)])
    assert not torch.equal(torch.cat([y for _, y in a]), other_epoch)
    other_seed = torch.cat([y for _, y in small_loader(None, seed=1).batches(3, 16)])
    assert not torch.equal(torch.cat([y for _, y in a]), other_seed)
    # Draws are per position, so the batch size does not change what each sample sees.
    big = torch.cat([x for x, _ in loader.batches(3, 32)])
    assert torch.equal(big, torch.cat([x for x, _ in a])[: len(big)])
    skipped = list(loader.batches(3, 16, start_batch=2))
    assert len(skipped) == len(a) - 2 and torch.equal(skipped[0][0], a[2][0])


def test_loader_batch_counts_and_sizes():
    loader = small_loader(None)
    assert len(loader) == 100
    assert [len(y) for _, y in loader.batches(0, 32)] == [32, 32, 32]
    assert [len(y) for _, y in loader.batches(1, 32, drop_last=False)] == [32, 32, 32, 4]
    assert [len(y) for _, y in loader.batches(2, 50)] == [50, 50]
    assert loader.num_batches(32) == 3 and loader.num_batches(32, drop_last=False) == 4
    ys = torch.cat([y for _, y in loader.batches(0, 7, shuffle=False, drop_last=False)])
    assert torch.equal(ys, torch.arange(100))


def test_augment_batch_matches_manual_crop_and_flip():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 256, (5, 3, 6, 7), dtype=torch.uint8, generator=g)
    dy, dx = torch.tensor([0, 8, 3, 4, 1]), torch.tensor([8, 0, 5, 4, 2])
    flip = torch.tensor([False, False, True, False, True])
    out = augment_batch(x, dy, dx, flip, padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(5):
        crop = padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 7]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert torch.equal(augment_batch(x, dy * 0, dx * 0, flip | True, padding=0), x.flip(-1))


def test_loader_augmentation_is_translation_of_padded_image():
    loader = small_loader(Augment(crop_padding=2, hflip=True))
    x, y = next(loader.batches(0, 20))
    padded = F.pad(loader.images[y], (2, 2, 2, 2))
    flips = 0
    for img, src in zip(to_uint8(x), padded, strict=True):
        crops = [src[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(img, c) for c in crops)
        mirrored = any(torch.equal(img, c.flip(-1)) for c in crops)
        assert plain or mirrored, "augmented sample is not a crop of the padded original"
        flips += mirrored and not plain
    assert 0 < flips < 20
    assert x.shape == (20, 3, 8, 8) and x.dtype == torch.float32


def test_loader_normalization(shapes):
    loader = make_loader(
        shapes.train, mean=shapes.mean, std=shapes.std, device="cpu", augment=None, seed=0
    )
    x = torch.cat([b for b, _ in loader.batches(0, 256, shuffle=False, drop_last=False)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    expected = (
        shapes.train.images[:4].float() / 255 - torch.tensor(shapes.mean).view(1, 3, 1, 1)
    ) / torch.tensor(shapes.std).view(1, 3, 1, 1)
    assert torch.allclose(x[:4], expected, atol=1e-5)

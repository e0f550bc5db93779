"""A procedurally generated, download-free shape-classification dataset for demos and tests.

Each image shows one of ten shapes (disc, ring, square, hollow square, triangle, plus, X-cross,
horizontal bars, vertical bars, checkerboard) at a random position, scale and colour, on a random
coloured background with a linear brightness gradient and Gaussian pixel noise. It is small
enough to generate in about a second and easy enough that LeNet-5 (LeCun et al. 1998) learns it
on a CPU within a minute, yet hard enough that optimizers and normalizations still differ.

Every shape is mirror-symmetric about the vertical axis (the triangle points up), so horizontal
flips are label-preserving augmentation here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainrepro.data.splits import ImageSet, Loaded, dataset_builder, derive_seed
from trainrepro.errors import ConfigError

Tensor = torch.Tensor

SHAPES = (
    "disc",
    "ring",
    "square",
    "hollow_square",
    "triangle",
    "plus",
    "x_cross",
    "horizontal_bars",
    "vertical_bars",
    "checkerboard",
)


def _box(u: Tensor, v: Tensor, half: float = 0.9) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= half


def _stripes(t: Tensor) -> Tensor:
    # Two full periods across the unit half-width: four bars in the shape's bounding box.
    return torch.remainder(t * 2.0, 1.0) < 0.5


def _disc(u: Tensor, v: Tensor) -> Tensor:
    return u * u + v * v <= 1.0


def _ring(u: Tensor, v: Tensor) -> Tensor:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5**2)


def _square(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 0.8)


def _hollow_square(u: Tensor, v: Tensor) -> Tensor:
    m = torch.maximum(u.abs(), v.abs())
    return (m <= 0.9) & (m >= 0.5)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    # Apex up at v=-0.9, base at v=0.8 (image rows grow downwards).
    return (v <= 0.8) & (u.abs() <= (v + 0.9) * 0.6)


def _plus(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v) & ((u.abs() <= 0.25) | (v.abs() <= 0.25))


def _x_cross(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v) & (((u - v).abs() <= 0.3) | ((u + v).abs() <= 0.3))


def _hbars(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v) & _stripes(v + 1.0)


def _vbars(u: Tensor, v: Tensor) -> Tensor:
    # Phase symmetric about u=0 so the class stays mirror-invariant.
    return _box(u, v) & _stripes(u.abs() + 0.125)


def _checker(u: Tensor, v: Tensor) -> Tensor:
    # Mirroring swaps the colours of a 4x4 board: still a checkerboard.
    return _box(u, v) & (_stripes(u + 1.0) ^ _stripes(v + 1.0))


_MASKS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    _disc,
    _ring,
    _square,
    _hollow_square,
    _triangle,
    _plus,
    _x_cross,
    _hbars,
    _vbars,
    _checker,
)


def generate_shapes(
    n: int, *, image_size: int = 32, num_classes: int = 10, noise: float = 0.1, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` images uint8 [n,3,S,S] and balanced int64 labels; a pure function of the arguments.

    Vectorized over samples (one pass per class), all draws from one seeded CPU generator.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in [1, {len(SHAPES)}]")
    g = torch.Generator().manual_seed(seed)
    s = image_size

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g)

    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    # Shape geometry, in pixels: half-size 22-40% of the image, centre keeps most of it inside.
    radius = (0.22 + 0.18 * rand(n)) * s
    cx = s / 2 + (rand(n) - 0.5) * (s - 2 * radius) * 0.8
    cy = s / 2 + (rand(n) - 0.5) * (s - 2 * radius) * 0.8
    # Colours: light shape on dark ground or the reverse, random hue within each, so the shape
    # (not the colour) carries the label while contrast stays visible through the noise.
    light_fg = (rand(n) < 0.5).view(n, 1)
    dark, light = 0.05 + 0.4 * rand(n, 3), 0.55 + 0.4 * rand(n, 3)
    fg = torch.where(light_fg, light, dark)
    bg = torch.where(light_fg, dark, light)
    angle = rand(n) * 2 * torch.pi
    out = torch.empty(n, 3, s, s, dtype=torch.uint8)
    # Pixels in chunks: bounded memory and cache-sized temporaries (much faster than one pass).
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        out[a:b] = _render(
            labels[a:b], radius[a:b], cx[a:b], cy[a:b], fg[a:b], bg[a:b], angle[a:b], s, noise, g
        )
    return out, labels


_CHUNK = 1024


def _render(
    labels: Tensor,
    radius: Tensor,
    cx: Tensor,
    cy: Tensor,
    fg: Tensor,
    bg: Tensor,
    angle: Tensor,
    s: int,
    noise: float,
    g: torch.Generator,
) -> Tensor:
    n = len(labels)
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    u = ((coords.view(1, 1, s) - cx.view(n, 1, 1)) / radius.view(n, 1, 1)).expand(n, s, s)
    v = ((coords.view(1, s, 1) - cy.view(n, 1, 1)) / radius.view(n, 1, 1)).expand(n, s, s)
    mask = torch.zeros(n, s, s, dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        mask[idx] = _MASKS[c](u[idx], v[idx])
    # A random linear gradient across the background, up to +-0.15.
    ramp = torch.cos(angle).view(n, 1, 1) * (coords.view(1, 1, s) / s - 0.5) + torch.sin(
        angle
    ).view(n, 1, 1) * (coords.view(1, s, 1) / s - 0.5)
    img = torch.randn(n, 3, s, s, generator=g).mul_(noise)
    img += torch.where(
        mask.unsqueeze(1), fg.view(n, 3, 1, 1), bg.view(n, 3, 1, 1) + 0.3 * ramp.unsqueeze(1)
    )
    return img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


@dataset_builder()
def synthetic(
    *,
    num_train: int = 10000,
    num_test: int = 2000,
    image_size: int = 32,
    num_classes: int = 10,
    noise: float = 0.1,
    seed: int = 0,
) -> Loaded:
    """Procedural shapes (see trainrepro.data.synthetic); every class is mirror-symmetric, so
    hflip is on by default. Train and test come from independent seeded streams."""
    for key, value, low in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 1),
        ("image_size", image_size, 8),
    ):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"dataset.{key}", value, f"must be an integer >= {low}")
    if not isinstance(num_classes, int) or not 2 <= num_classes <= len(SHAPES):
        raise ConfigError(
            "dataset.num_classes",
            num_classes,
            f"must be between 2 and {len(SHAPES)} (the shapes: {', '.join(SHAPES)})",
        )
    if not isinstance(noise, int | float) or noise < 0:
        raise ConfigError("dataset.noise", noise, "must be >= 0")
    kw = {"image_size": image_size, "num_classes": num_classes, "noise": float(noise)}
    xtr, ytr = generate_shapes(num_train, seed=derive_seed(seed, "train"), **kw)
    xte, yte = generate_shapes(num_test, seed=derive_seed(seed, "test"), **kw)
    return Loaded(
        "synthetic",
        ImageSet(xtr, ytr),
        ImageSet(xte, yte),
        num_classes=num_classes,
        in_channels=3,
        image_size=image_size,
        classes=list(SHAPES[:num_classes]),
    )

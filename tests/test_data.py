"""Tests for trainrepro.data: builders, readers, cache, splits and the seeded loaders."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from support import cli

from trainrepro.config import builder_kwargs, instantiate, resolve_target
from trainrepro.data import (
    Augment,
    FileImageSet,
    ImageSet,
    StreamingLoader,
    channel_stats,
    cifar10,
    cifar100,
    imagefolder,
    make_loader,
    mnist,
    sources,
    stratified_indices,
    stratified_split,
    synthetic,
)
from trainrepro.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRAINREPRO_DATA", REPO.parent / "shared" / "data"))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory: pytest.TempPathFactory):
    """The real /work/shared/data CIFAR-10 JPEGs, decoded once per session into a tmp cache."""
    if not (DATA / "cifar10" / "train").is_dir():
        pytest.skip(f"real CIFAR-10 image folders not found under {DATA} (set TRAINREPRO_DATA)")
    return cifar10(root=str(DATA), cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def shapes():
    return synthetic(num_train=1000, num_test=200, augment=False)


def write_jpeg_tree(root: Path, classes: dict[str, int], size=(12, 12), seed=0) -> None:
    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:03d}.jpg", quality=95)


def cifar_blob(n: int, rng: np.random.Generator, label_key, str_keys: bool) -> dict:
    def key(k: str):
        return k if str_keys else k.encode()

    return {
        key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        key(label_key): [int(i) % 10 for i in range(n)],
    }


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_balanced(shapes):
    again = synthetic(num_train=1000, num_test=200, augment=False)
    assert torch.equal(shapes.train.images, again.train.images)
    assert torch.equal(shapes.test.labels, again.test.labels)
    assert shapes.train.images.shape == (1000, 3, 32, 32)
    assert shapes.train.images.dtype == torch.uint8
    assert torch.bincount(shapes.train.labels).tolist() == [100] * 10
    assert torch.bincount(shapes.test.labels).tolist() == [20] * 10
    assert shapes.augment is None and shapes.num_classes == 10 and shapes.in_channels == 3
    other = synthetic(num_train=1000, num_test=200, seed=1)
    assert not torch.equal(shapes.train.images, other.train.images)
    assert not torch.equal(shapes.train.images[:200], shapes.test.images)


def test_synthetic_learnable():
    torch.manual_seed(0)
    d = synthetic(num_train=3000, num_test=500, augment=False)
    train = make_loader(d.train, mean=d.mean, std=d.std, device="cpu", augment=None, seed=0)
    test = make_loader(d.test, mean=d.mean, std=d.std, device="cpu", augment=None, seed=0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(4):
        for x, y in train.batches(epoch, 64):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        correct = sum(
            (net(x).argmax(1) == y).sum().item()
            for x, y in test.batches(0, 250, shuffle=False, drop_last=False)
        )
    assert correct / len(test) > 0.4  # chance is 0.1


def test_synthetic_validation():
    with pytest.raises(ConfigError, match=r"^dataset\.num_classes=11"):
        synthetic(num_classes=11)
    with pytest.raises(ConfigError, match=r"^dataset\.num_train=0"):
        synthetic(num_train=0)


# ---------------------------------------------------------------- CIFAR pickle batches


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    blobs = {f"data_batch_{i}": cifar_blob(20, rng, "labels", False) for i in range(1, 6)}
    blobs["test_batch"] = cifar_blob(30, rng, "labels", False)
    blobs["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    for name, blob in blobs.items():
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    d = cifar10(root=str(tmp_path), augment=False)
    assert (len(d.train), len(d.test), d.num_classes, d.image_size) == (100, 30, 10, 32)
    first = blobs["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(d.train.images[0].numpy(), first)
    assert d.train.labels[:20].tolist() == blobs["data_batch_1"][b"labels"]
    assert d.classes == [f"c{i}" for i in range(10)]
    assert d.augment is None
    assert not list(tmp_path.glob("cifar10"))  # nothing written next to the data


def test_cifar100_pickles(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = cifar_blob(50, rng, "fine_labels", True)
    train["fine_labels"] = [(7 * i) % 100 for i in range(50)]
    train["coarse_labels"] = [i % 20 for i in range(50)]
    test = cifar_blob(10, rng, "fine_labels", True)
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []}
    for name, blob in {"train": train, "test": test, "meta": meta}.items():
        with open(folder / name, "wb") as f:
            pickle.dump(blob, f)
    d = cifar100(root=str(tmp_path), hflip=False)
    assert (len(d.train), len(d.test), d.num_classes) == (50, 10, 100)
    assert d.train.labels.tolist() == train["fine_labels"]
    assert d.augment == Augment(crop_padding=4, hflip=False)


def test_missing_root_creates_nothing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as err:
        cifar10(root=str(root), cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "dataset.root"
    assert f"no CIFAR-10 found there (looked in {root}/cifar-10-batches-py/" in str(err.value)
    assert "dataset.download=true" in str(err.value)
    assert not root.exists() and not (tmp_path / "cache").exists()
    root.mkdir()
    for build, holding in ((cifar10, "cifar10/"), (cifar100, "cifar100/"), (mnist, "mnist/raw/")):
        with pytest.raises(ConfigError, match=r"^dataset\.root=") as err:
            build(root=str(root))
        # Both ways to point at the data: the variable a new shell lacks, and the key.
        assert f"set TRAINREPRO_DATA=<folder holding {holding}" in str(err.value)
        assert "or dataset.root=<that folder>" in str(err.value)
    assert list(root.iterdir()) == []
    with pytest.raises(ConfigError, match=r"^dataset\.root=None"):
        imagefolder(root=None)


def test_missing_data_through_the_cli_names_the_variable_and_the_key(tmp_path, monkeypatch):
    """A new shell has no TRAINREPRO_DATA (only `make` sets it), so the root is ./data: the one
    error line says how to point at the data."""
    monkeypatch.delenv("TRAINREPRO_DATA", raising=False)
    run_dir = tmp_path / "run"
    args = ("model=lenet5", "schedule=constant", "epochs=1", f"hydra.run.dir={run_dir}")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(
        "error: dataset.root=data: no CIFAR-10 found there (looked in data/cifar-10-batches-py/"
    )
    assert "set TRAINREPRO_DATA=<folder holding cifar10/" in line
    assert "or dataset.root=<that folder>" in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- image folders and the cache


def test_imagefolder_cache_and_invalidation(tmp_path, monkeypatch):
    write_jpeg_tree(tmp_path / "data" / "train", {"b": 4, "a": 3})
    write_jpeg_tree(tmp_path / "data" / "test", {"a": 2, "b": 2}, seed=1)
    cache = tmp_path / "cache"
    first = imagefolder(root=str(tmp_path / "data"), image_size=12, cache_dir=str(cache))
    assert first.classes == ["a", "b"] and first.train.labels.tolist() == [0] * 3 + [1] * 4
    with Image.open(tmp_path / "data" / "train" / "a" / "001.jpg") as im:
        assert np.array_equal(first.train.images[1].permute(1, 2, 0).numpy(), np.asarray(im))
    assert len(list(cache.glob("*.pt"))) == 2  # one per split folder

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(sources, "decode_files", no_decode)
    second = imagefolder(root=str(tmp_path / "data"), image_size=12, cache_dir=str(cache))
    assert torch.equal(first.train.images, second.train.images)
    # Rewrite one file: size/mtime change, so the train folder is decoded again.
    write_jpeg_tree(tmp_path / "data" / "train", {"a": 1}, seed=7)
    with pytest.raises(AssertionError, match="decoded although"):
        imagefolder(root=str(tmp_path / "data"), image_size=12, cache_dir=str(cache))
    monkeypatch.undo()
    third = imagefolder(root=str(tmp_path / "data"), image_size=12, cache_dir=str(cache))
    assert not torch.equal(first.train.images[0], third.train.images[0])
    assert torch.equal(first.train.images[1:], third.train.images[1:])
    assert len(list(cache.glob("*.pt"))) == 2  # the stale train entry was replaced


def test_imagefolder_resize_and_class_mismatch(tmp_path):
    write_jpeg_tree(tmp_path / "train", {"x": 2, "y": 2}, size=(40, 20))
    write_jpeg_tree(tmp_path / "test", {"x": 1, "y": 1}, size=(20, 40))
    d = imagefolder(root=str(tmp_path), image_size=16, cache_dir=str(tmp_path / "c"))
    assert d.train.images.shape == (4, 3, 16, 16) and d.test.images.shape == (2, 3, 16, 16)
    write_jpeg_tree(tmp_path / "test", {"z": 1})
    with pytest.raises(ConfigError, match=r"^dataset\.test_dir=test: classes differ"):
        imagefolder(root=str(tmp_path), image_size=16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"^dataset\.in_memory=maybe"):
        imagefolder(root=str(tmp_path), in_memory="maybe")


def test_streaming_matches_in_memory(tmp_path):
    write_jpeg_tree(tmp_path / "train", {"a": 6, "b": 5})
    write_jpeg_tree(tmp_path / "test", {"a": 2, "b": 2}, seed=3)
    mem = imagefolder(root=str(tmp_path), image_size=12, cache_dir=str(tmp_path / "c"))
    stream = imagefolder(root=str(tmp_path), image_size=12, in_memory=False)
    assert isinstance(stream.train, FileImageSet) and isinstance(mem.train, ImageSet)
    assert any("streamed" in n for n in stream.notes)
    assert np.allclose(mem.mean, stream.mean) and np.allclose(mem.std, stream.std)
    kw = {"mean": mem.mean, "std": mem.std, "device": "cpu", "augment": mem.augment, "seed": 5}
    dev = make_loader(mem.train, **kw)
    for workers in (0, 2):
        st = StreamingLoader(stream.train, num_workers=workers, **kw)
        for epoch, bs in ((0, 4), (1, 3)):
            a, b = list(dev.batches(epoch, bs)), list(st.batches(epoch, bs))
            assert len(a) == len(b) == dev.num_batches(bs)
            for (xa, ya), (xb, yb) in zip(a, b, strict=True):
                assert torch.equal(ya, yb) and torch.allclose(xa, xb)
    rest = list(st.batches(1, 3, start_batch=1))
    assert len(rest) == len(b) - 1 and torch.equal(rest[0][1], b[1][1])
    # DDP (trainrepro.engine.distributed): each rank streams its contiguous slice of every batch, so
    # the two ranks' pieces side by side are the one-process batch (from a mid-epoch start too).
    whole = list(st.batches(1, 4, start_batch=1))
    ranks = [list(st.batches(1, 4, start_batch=1, shard=(r, 2))) for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == dev.num_batches(4) - 1
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *ranks, strict=True):
        assert len(y0) == len(y1) == 2
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


# ---------------------------------------------------------------- MNIST


def test_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        sources.write_idx(tmp_path / name, arr)
        out = sources.read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and np.array_equal(out, arr)
    assert (tmp_path / "x-idx3-ubyte").read_bytes()[:8] == b"\x00\x00\x08\x03\x00\x00\x00\x02"
    ints = np.array([-5, 7, 1 << 20], dtype=np.int32)
    sources.write_idx(tmp_path / "i", ints)
    assert np.array_equal(sources.read_idx(tmp_path / "i"), ints)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        sources.read_idx(tmp_path / "bad")


def test_mnist_fake_full(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        sources.write_idx(
            raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        sources.write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    d = mnist(root=str(tmp_path))
    assert (len(d.train), len(d.test), d.in_channels, d.image_size) == (50, 20, 1, 28)
    assert d.train.images.shape == (50, 1, 28, 28) and d.notes == [] and d.augment is None


def test_mnist_real_test_set_split():
    if not (DATA / "mnist" / "raw").is_dir():
        pytest.skip(f"real MNIST IDX files not found under {DATA} (set TRAINREPRO_DATA)")
    with pytest.raises(ConfigError) as err:
        mnist(root=str(DATA))
    assert err.value.key == "dataset.split_test_set"
    assert "8,000 train / 2,000 test" in str(err.value)
    d = mnist(root=str(DATA), split_test_set=True)
    assert (len(d.train), len(d.test)) == (8000, 2000)
    full = torch.bincount(torch.cat([d.train.labels, d.test.labels]))
    assert full.sum() == 10000
    assert (torch.bincount(d.test.labels) - full.double() * 0.2).abs().max() <= 1
    assert any("split from the 10,000-image test set" in n for n in d.notes)
    again = mnist(root=str(DATA), split_test_set=True)
    assert torch.equal(d.train.images, again.train.images)
    assert 0.1 < d.mean[0] < 0.15 and 0.28 < d.std[0] < 0.33  # MNIST: ~0.13 / ~0.31
    with pytest.raises(ConfigError, match=r"^dataset\.split_test_train_size=10000"):
        mnist(root=str(DATA), split_test_set=True, split_test_train_size=10000)


# ---------------------------------------------------------------- real CIFAR-10


def test_real_cifar10(real_cifar10):
    d = real_cifar10
    assert (len(d.train), len(d.test), d.num_classes) == (50000, 10000, 10)
    assert d.train.images.shape == (50000, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert np.allclose(d.mean, (0.491, 0.481, 0.444), atol=0.005)
    assert np.allclose(d.std, (0.247, 0.243, 0.262), atol=0.005)


# ---------------------------------------------------------------- splits


def test_train_size_and_val_fraction():
    a = synthetic(num_train=1000, num_test=100, train_size=300, val_fraction=0.2)
    b = synthetic(num_train=1000, num_test=100, train_size=300, val_fraction=0.2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.images, b.val.images)
    assert (len(a.train), len(a.val)) == (240, 60)
    assert torch.bincount(a.train.labels).tolist() == [24] * 10
    assert torch.bincount(a.val.labels).tolist() == [6] * 10
    rows = {bytes(x.numpy().tobytes()) for x in a.train.images}
    assert not any(bytes(x.numpy().tobytes()) in rows for x in a.val.images)
    assert a.mean == channel_stats(a.train.images)[0]  # stats from the final train split
    for key, kw in (
        ("train_size=1001", {"train_size": 1001}),
        ("train_size=0", {"train_size": 0}),
        ("val_fraction=1.0", {"val_fraction": 1.0}),
        ("val_fraction=-0.1", {"val_fraction": -0.1}),
    ):
        with pytest.raises(ConfigError, match=rf"^dataset\.{key}"):
            synthetic(num_train=1000, num_test=100, **kw)


def test_stratified_helpers():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_indices(labels, 10, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, stratified_indices(labels, 10, seed=0))
    keep, hold = stratified_split(labels, 25)
    assert len(set(keep.tolist()) & set(hold.tolist())) == 0 and len(keep) + len(hold) == 100


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("option", ["cifar10", "cifar100", "mnist", "imagefolder", "synthetic"])
def test_yaml_defaults_match_builders(option):
    import inspect

    node = OmegaConf.load(REPO / "conf" / "dataset" / f"{option}.yaml")
    fn = resolve_target(node._target_, "dataset._target_")
    params = inspect.signature(fn).parameters
    kwargs = builder_kwargs(node)
    assert set(kwargs) == set(params)
    for k, v in kwargs.items():
        if k != "root" and params[k].default is not inspect.Parameter.empty:
            assert params[k].default == v, k


def test_instantiate_synthetic_yaml():
    node = OmegaConf.load(REPO / "conf" / "dataset" / "synthetic.yaml")
    node.num_train, node.num_test = 200, 50
    d = instantiate("dataset", node)
    assert len(d.train) == 200 and d.augment == Augment(4, True)

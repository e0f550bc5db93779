"""``dataset.test_size``: evaluation on a stratified subset of the test set, the same images in
every run of a comparison (a fixed seed, never the run's), for every dataset builder; checked
before anything is read or written, and shown by ``trainrepro plan``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import TINY, cli, tiny_cfg, write_fake_cifar100, write_image_tree

from trainrepro.config import instantiate
from trainrepro.data import cifar100, imagefolder, mnist, sources, synthetic
from trainrepro.engine.build import build_run
from trainrepro.errors import ConfigError


def rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_a_stratified_subset_of_the_test_set_only():
    full = synthetic(num_train=500, num_test=1000, augment=False)
    d = synthetic(num_train=500, num_test=1000, test_size=300, augment=False)
    assert len(d.test) == 300 and d.full_test_size == 1000 and full.full_test_size is None
    assert torch.bincount(full.test.labels).tolist() == [100] * 10
    assert torch.bincount(d.test.labels).tolist() == [30] * 10  # the test set's proportions
    assert rows(d.test.images) <= rows(full.test.images)
    assert torch.equal(d.train.images, full.train.images) and d.mean == full.mean
    assert any(n.startswith("test_size=300: stratified subset of the 1000 test") for n in d.notes)


def test_uneven_shares_differ_by_at_most_one():
    d = synthetic(num_train=200, num_test=1000, test_size=15, augment=False)
    counts = torch.bincount(d.test.labels, minlength=10)
    assert counts.sum() == 15 and counts.max() - counts.min() <= 1


def test_the_whole_test_set_is_no_subset():
    for size in (None, 200):
        d = synthetic(num_train=100, num_test=200, test_size=size, augment=False)
        assert len(d.test) == 200 and d.full_test_size is None
        assert not any(n.startswith("test_size") for n in d.notes)


def test_the_same_images_whatever_the_runs_seed_or_training_split():
    def test_images(*overrides: str) -> torch.Tensor:
        run = build_run(tiny_cfg("dataset.test_size=100", *overrides))
        assert len(run.test_loader) == 100
        return run.test_loader.images

    first = test_images("seed=0")
    for other in (("seed=1",), ("seed=7", "dataset.train_size=300"), ("optimizer=adam",)):
        assert torch.equal(test_images(*other), first), other


def write_fake_mnist(root):
    raw = root / "mnist" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 40)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        sources.write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        sources.write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    return root


# Every builder with a test split, on small fake data: (build, data writer, test size, classes).
BUILDERS = {
    "cifar100": (cifar100, write_fake_cifar100, 100, 100),
    "mnist": (mnist, write_fake_mnist, 40, 10),
    "imagefolder": (imagefolder, write_image_tree, 18, 3),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_builder_takes_test_size(tmp_path, name):
    build, write, n_test, classes = BUILDERS[name]
    root = str(write(tmp_path))
    full = build(root=root, augment=False)
    d = build(root=root, augment=False, test_size=n_test // 2)
    assert len(full.test) == n_test and len(d.test) == n_test // 2
    counts = torch.bincount(d.test.labels, minlength=classes)
    assert counts.max() - counts.min() <= 1
    assert rows(d.test.images) <= rows(full.test.images)
    with pytest.raises(ConfigError, match=rf"^dataset\.test_size={n_test + 1}: exceeds the "):
        build(root=root, test_size=n_test + 1)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "all"])
def test_not_a_positive_integer_is_refused_before_reading(tmp_path, bad):
    # The root does not exist: the key is checked before any data is looked for.
    with pytest.raises(ConfigError) as err:
        mnist(root=str(tmp_path / "nothing"), test_size=bad)
    assert str(err.value) == f"dataset.test_size={bad}: must be a positive integer or null"


def test_more_than_the_test_set_is_refused():
    with pytest.raises(ConfigError) as err:
        instantiate("dataset", tiny_cfg("dataset.test_size=257").dataset)
    assert str(err.value) == "dataset.test_size=257: exceeds the 256 test images available"


@pytest.mark.parametrize(
    "size, line",
    [
        (None, "evaluation after each epoch: all 256 test images"),
        (
            "100",
            "evaluation after each epoch: 100 of the 256 test images, a stratified subset "
            "(dataset.test_size; the same images whatever the seed)",
        ),
    ],
)
def test_plan_says_how_many_test_images_each_evaluation_uses(tmp_path, size, line):
    args = ["plan", *TINY, *([f"dataset.test_size={size}"] if size else [])]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert line in result.stdout.splitlines()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value, reason",
    [("0", "must be a positive integer or null"), ("257", "exceeds the 256 test images available")],
)
def test_a_bad_test_size_is_one_line_through_the_cli(tmp_path, value, reason):
    run_dir = tmp_path / "run"
    result = cli(*TINY, f"dataset.test_size={value}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: dataset.test_size={value}: {reason}"
    assert not run_dir.exists()

"""Dataset-group builders (conf/dataset/*.yaml): each returns a :class:`DataSplits`.

Every builder reads its data before returning, so a missing or malformed dataset raises a
ConfigError before the run creates anything. Datasets: CIFAR-10/100 (Krizhevsky 2009), MNIST
(LeCun et al. 1998), any class-per-folder image tree, and the synthetic shapes set
(trainrepro.data.synthetic).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from trainrepro.data import sources
from trainrepro.data.splits import (
    SPLIT_SEED,
    FileImageSet,
    ImageSet,
    Loaded,
    dataset_builder,
    stratified_split,
)

# The synthetic builder lives with its generator; re-exported so every target is builders.X.
from trainrepro.data.synthetic import synthetic
from trainrepro.errors import ConfigError

__all__ = ["cifar10", "cifar100", "imagefolder", "mnist", "synthetic"]

_CIFAR = {
    # name: (pickle folder, image-folder name, classes, pickle reader)
    "cifar10": ("cifar-10-batches-py", "cifar10", 10, sources.read_cifar10_pickles),
    "cifar100": ("cifar-100-python", "cifar100", 100, sources.read_cifar100_pickles),
}


def _root(root: str | None) -> Path:
    if root is None or str(root).strip() == "":
        raise ConfigError("dataset.root", root, "must name the folder that holds the data")
    return Path(str(root)).expanduser()


def _not_found(label: str, looked: str, holding: str) -> str:
    """The missing-data reason: where we looked and both ways to point at the data. The default
    root is $TRAINREPRO_DATA (else ./data), which only `make` sets: a new shell lands here."""
    return (
        f"no {label} found there (looked in {looked}); set TRAINREPRO_DATA=<folder holding "
        f"{holding}> or dataset.root=<that folder> (or dataset.download=true if online)"
    )


def _download(name: str, root: Path) -> None:
    import torchvision

    cls = {
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
        "mnist": torchvision.datasets.MNIST,
    }[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types; name the key that caused it
        raise ConfigError(
            "dataset.download", True, f"downloading {name} into {root} failed: {e}"
        ) from None


def _check_listing(listing: sources.FolderListing, key: str, value: object) -> None:
    if not listing.paths:
        raise ConfigError(key, value, f"{listing.root} has no class folders with images")
    counts = torch.bincount(torch.tensor(listing.labels), minlength=len(listing.classes))
    empty = [c for c, k in zip(listing.classes, counts.tolist(), strict=True) if k == 0]
    if empty:
        raise ConfigError(
            key, value, f"class folder(s) without images in {listing.root}: " + ", ".join(empty[:5])
        )


def _same_classes(train: list[str], other: list[str], key: str, value: object) -> None:
    if train != other:
        missing, extra = sorted(set(train) - set(other)), sorted(set(other) - set(train))
        raise ConfigError(
            key,
            value,
            f"classes differ from the train folder's: missing {missing[:5]}, extra {extra[:5]}",
        )


def _cifar(name: str, root: str, download: bool, cache_dir: str | None) -> Loaded:
    pickle_dir, folder_name, num_classes, reader = _CIFAR[name]
    base = _root(root)
    pickles, folder = base / pickle_dir, base / folder_name
    if not pickles.is_dir() and not (folder / "train").is_dir() and download:
        _download(name, base)
    notes: list[str] = []
    if pickles.is_dir():
        try:
            (xtr, ytr), (xte, yte), classes = reader(pickles)
        except (OSError, KeyError, ValueError, pickle.UnpicklingError) as e:
            raise ConfigError("dataset.root", root, f"unreadable {pickles}: {e!r}") from None
    elif (folder / "train").is_dir() and (folder / "test").is_dir():
        # List and check both folders before decoding anything (decoding takes seconds).
        listings = [sources.scan_image_folder(folder / s) for s in ("train", "test")]
        for listing in listings:
            _check_listing(listing, "dataset.root", root)
        _same_classes(listings[0].classes, listings[1].classes, "dataset.root", root)
        classes = listings[0].classes
        if len(classes) != num_classes:
            raise ConfigError(
                "dataset.root",
                root,
                f"{folder}/train has {len(classes)} class folders, {name} has {num_classes}",
            )
        train, test = (sources.load_image_folder(x.root, 32, cache_dir, x) for x in listings)
        (xtr, ytr), (xte, yte) = (train.images, train.labels), (test.images, test.labels)
        notes.append(f"{name} read from the JPEG image folders in {folder}")
    else:
        label = name.upper().replace("CIFAR", "CIFAR-")
        looked = f"{pickles}/ for pickle batches, {folder}/{{train,test}}/ for image folders"
        holding = f"{folder_name}/ or {pickle_dir}/"
        raise ConfigError("dataset.root", root, _not_found(label, looked, holding))
    return Loaded(
        name,
        ImageSet(xtr, ytr),
        ImageSet(xte, yte),
        num_classes=num_classes,
        in_channels=3,
        image_size=32,
        classes=classes,
        notes=notes,
    )


@dataset_builder()
def cifar10(*, root: str, download: bool = False, cache_dir: str | None = None) -> Loaded:
    """CIFAR-10 (Krizhevsky 2009): 50k/10k 32x32 RGB images, 10 classes."""
    return _cifar("cifar10", root, download, cache_dir)


@dataset_builder()
def cifar100(*, root: str, download: bool = False, cache_dir: str | None = None) -> Loaded:
    """CIFAR-100 (Krizhevsky 2009): 50k/10k 32x32 RGB images, 100 fine classes."""
    return _cifar("cifar100", root, download, cache_dir)


def _mnist_files(base: Path, prefix: str) -> tuple[Path, Path] | None:
    for sub in ("mnist", "MNIST"):
        raw = base / sub / "raw"
        images = sources.find_idx(raw, f"{prefix}-images-idx3-ubyte")
        labels = sources.find_idx(raw, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            return images, labels
    return None


def _read_mnist(files: tuple[Path, Path], root: str) -> ImageSet:
    try:
        images, labels = (sources.read_idx(f) for f in files)
    except ValueError as e:
        raise ConfigError("dataset.root", root, f"unreadable MNIST file: {e}") from None
    if images.ndim != 3 or labels.shape != (len(images),):
        raise ConfigError(
            "dataset.root",
            root,
            f"MNIST files {files[0].name} and "
            f"{files[1].name} disagree: {images.shape} vs {labels.shape}",
        )
    x = torch.from_numpy(images.astype("uint8")).unsqueeze(1)
    return ImageSet(x, torch.from_numpy(labels.astype("int64")))


@dataset_builder(augment=False, crop_padding=2, hflip=False)
def mnist(
    *,
    root: str,
    download: bool = False,
    split_test_set: bool = False,
    split_test_train_size: int = 8000,
    cache_dir: str | None = None,
) -> Loaded:
    """MNIST (LeCun et al. 1998): 28x28 grey digits. ``split_test_set`` splits the 10k test set
    into train/test parts (stratified, fixed seed) for machines that only have t10k files.
    ``cache_dir`` is accepted for a uniform interface; IDX files are read directly."""
    del cache_dir
    base = _root(root)
    train_files, test_files = _mnist_files(base, "train"), _mnist_files(base, "t10k")
    if download and (test_files is None or (train_files is None and not split_test_set)):
        _download("mnist", base)
        train_files, test_files = _mnist_files(base, "train"), _mnist_files(base, "t10k")
    if test_files is None:
        files = "t10k-{images-idx3,labels-idx1}-ubyte[.gz]"
        looked = f"{base}/mnist/raw/ and {base}/MNIST/raw/ for {files}"
        raise ConfigError("dataset.root", root, _not_found("MNIST", looked, "mnist/raw/"))
    test = _read_mnist(test_files, root)
    notes: list[str] = []
    if split_test_set:
        if not isinstance(split_test_train_size, int) or not 0 < split_test_train_size < len(test):
            raise ConfigError(
                "dataset.split_test_train_size",
                split_test_train_size,
                f"must be between 1 and {len(test) - 1}",
            )
        n_test = len(test) - split_test_train_size
        keep, hold = stratified_split(test.labels, n_test, SPLIT_SEED)
        train, test = test.subset(keep), test.subset(hold)
        notes.append(
            f"MNIST train/test split from the {len(keep) + len(hold):,}-image test set "
            f"({test_files[0].parent}): {len(keep):,} train / {len(hold):,} test, "
            f"stratified, seed {SPLIT_SEED}; not comparable to published MNIST numbers"
        )
    elif train_files is None:
        raise ConfigError(
            "dataset.split_test_set",
            False,
            f"only the MNIST test set "
            f"({len(test):,} images) is in {test_files[0].parent}; set "
            "dataset.split_test_set=true to split it into "
            f"{split_test_train_size:,} train / {len(test) - split_test_train_size:,}"
            " test images (stratified, fixed seed)",
        )
    else:
        train = _read_mnist(train_files, root)
    digits = [str(i) for i in range(10)]
    return Loaded("mnist", train, test, 10, 1, image_size=28, classes=digits, notes=notes)


@dataset_builder()
def imagefolder(
    *,
    root: str | None = None,
    train_dir: str = "train",
    test_dir: str = "test",
    image_size: int = 32,
    in_memory: str | bool = "auto",
    max_memory_gb: float = 8.0,
    cache_dir: str | None = None,
) -> Loaded:
    """Any class-per-folder tree (class index = sorted folder name), resized to image_size.

    ``in_memory``: auto (decode and cache when the uint8 array fits ``max_memory_gb``), true,
    or false (stream files through worker processes every epoch).
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError("dataset.image_size", image_size, "must be a positive integer")
    mode = {"auto": "auto", "true": True, "false": False}.get(str(in_memory).lower())
    if mode is None:
        raise ConfigError("dataset.in_memory", in_memory, "must be auto, true or false")
    if not isinstance(max_memory_gb, int | float) or max_memory_gb <= 0:
        raise ConfigError("dataset.max_memory_gb", max_memory_gb, "must be > 0")
    base = _root(root)
    if not (base / train_dir).is_dir():
        raise ConfigError("dataset.root", root, f"has no train folder {base / train_dir}")
    if not (base / test_dir).is_dir():
        raise ConfigError("dataset.test_dir", test_dir, f"{base / test_dir} is not a folder")
    train_list = sources.scan_image_folder(base / train_dir)
    test_list = sources.scan_image_folder(base / test_dir)
    _check_listing(train_list, "dataset.train_dir", train_dir)
    _check_listing(test_list, "dataset.test_dir", test_dir)
    _same_classes(train_list.classes, test_list.classes, "dataset.test_dir", test_dir)
    n = len(train_list.paths) + len(test_list.paths)
    need_gb = n * 3 * image_size * image_size / 2**30
    notes: list[str] = []
    if mode is True or (mode == "auto" and need_gb <= max_memory_gb):
        tr = sources.load_image_folder(base / train_dir, image_size, cache_dir, train_list)
        te = sources.load_image_folder(base / test_dir, image_size, cache_dir, test_list)
        train, test = ImageSet(tr.images, tr.labels), ImageSet(te.images, te.labels)
    else:
        train = FileImageSet(train_list.paths, torch.tensor(train_list.labels), image_size)
        test = FileImageSet(test_list.paths, torch.tensor(test_list.labels), image_size)
        notes.append(
            f"{n:,} images streamed from disk ({need_gb:.1f} GiB decoded > "
            f"dataset.max_memory_gb={max_memory_gb})"
            if mode == "auto"
            else f"{n:,} images streamed from disk (dataset.in_memory=false)"
        )
    return Loaded(
        base.name or "imagefolder",
        train,
        test,
        num_classes=len(train_list.classes),
        in_channels=3,
        image_size=image_size,
        classes=train_list.classes,
        notes=notes,
    )

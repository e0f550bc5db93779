"""Readers for the on-disk formats: CIFAR pickle batches, MNIST IDX files, class-per-folder trees.

CIFAR-10/100 (Krizhevsky 2009) come either as torchvision's pickle batches or, on machines
without internet, as a JPEG image-folder tree; the latter is decoded once and its uint8 array
cached (see :func:`load_image_folder`).
"""

from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import os
import pickle
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
CACHE_VERSION = 1
# Below this many files a process pool costs more (interpreter start-up) than it saves.
PARALLEL_MIN_FILES = 2000
DECODE_CHUNK = 1000


# ---------------------------------------------------------------- CIFAR pickle batches


def _unpickle(path: Path) -> dict[str, Any]:
    # The original batches are Python 2 pickles; latin1 keeps their bytes intact.
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values: list[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_arrays(batches: list[dict[str, Any]], label_key: str) -> tuple[torch.Tensor, ...]:
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def read_cifar10_pickles(folder: Path) -> tuple[tuple[torch.Tensor, ...], ...]:
    """((train_x, train_y), (test_x, test_y), classes) from ``cifar-10-batches-py/``."""
    train = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = [_unpickle(folder / "test_batch")]
    classes = _names(_unpickle(folder / "batches.meta")["label_names"])
    return _cifar_arrays(train, "labels"), _cifar_arrays(test, "labels"), classes


def read_cifar100_pickles(folder: Path) -> tuple[tuple[torch.Tensor, ...], ...]:
    """((train_x, train_y), (test_x, test_y), classes) from ``cifar-100-python/`` (fine labels)."""
    train = [_unpickle(folder / "train")]
    test = [_unpickle(folder / "test")]
    classes = _names(_unpickle(folder / "meta")["fine_label_names"])
    return _cifar_arrays(train, "fine_labels"), _cifar_arrays(test, "fine_labels"), classes


# ---------------------------------------------------------------- MNIST IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (LeCun et al. 1998 MNIST format), gzipped or not, by its magic bytes."""
    buf = _open_maybe_gzip(Path(path))
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = buf[3]
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims, dtype=np.int64))
    if len(buf) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header says {dims} but the payload has {len(buf) - offset} bytes"
        )
    data = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzipped when the name ends in .gz."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def find_idx(folder: Path, stem: str) -> Path | None:
    """``<stem>`` or ``<stem>.gz`` in ``folder``, whichever exists."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


# ---------------------------------------------------------------- class-per-folder trees


@dataclass
class FolderListing:
    """The image files of a class-per-folder tree, in ImageFolder order."""

    root: Path
    classes: list[str]
    paths: list[str]
    labels: list[int]
    signature: str  # changes when any file is added, removed, resized or touched


def scan_image_folder(root: Path) -> FolderListing:
    """List ``root/<class>/<image>`` (class index = sorted folder name, files sorted by name)."""
    root = root.resolve()
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    h = hashlib.sha1()
    for label, cls in enumerate(classes):
        entries = sorted(
            (
                e
                for e in os.scandir(root / cls)
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
            ),
            key=lambda e: e.name,
        )
        for e in entries:
            st = e.stat()
            h.update(f"{cls}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            paths.append(e.path)
            labels.append(label)
    return FolderListing(root, classes, paths, labels, h.hexdigest())


def load_image(path: str, size: int | None) -> np.ndarray:
    """Decode one image to uint8 RGB [H,W,3]; if ``size``, resize the shorter side to it and
    center-crop to size x size (the usual ImageNet-style evaluation transform)."""
    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            im.draft("RGB", (size, size))  # decode large JPEGs at a reduced scale, >= size
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)  # writable: torch.from_numpy warns on read-only


def _decode_chunk(paths: list[str], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_image(p, size)
    return out


def decode_files(paths: list[str], size: int, workers: int | None = None) -> torch.Tensor:
    """Decode image files to a uint8 tensor [N,3,size,size], in worker processes when large.

    PIL decoding of small JPEGs is dominated by Python overhead, so threads do not help and a
    process pool does. Fork (torch DataLoader's default on Linux) because spawn would re-run an
    unguarded ``__main__`` script; the children only touch PIL and numpy, never torch.
    """
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if len(paths) < PARALLEL_MIN_FILES or workers <= 1:
        arr = _decode_chunk(paths, size) if paths else np.empty((0, size, size, 3), np.uint8)
    else:
        chunks = [paths[i : i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK)]
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            arr = np.concatenate(list(pool.map(_decode_chunk, chunks, [size] * len(chunks))))
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def default_cache_dir() -> Path:
    """$TRAINREPRO_CACHE, else ~/.cache/trainrepro."""
    env = os.environ.get("TRAINREPRO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "trainrepro"


def _cache_paths(listing: FolderListing, size: int, cache_dir: Path) -> tuple[Path, str]:
    # Name = hash(where, how decoded) + hash(what is there): a changed folder gets a new file and
    # the stale one (same prefix) is deleted, so the cache never grows per folder.
    where = hashlib.sha1(f"{listing.root}\0{size}\0v{CACHE_VERSION}".encode()).hexdigest()[:16]
    what = hashlib.sha1(f"{len(listing.paths)}\0{listing.signature}".encode()).hexdigest()[:16]
    prefix = f"imagefolder-{listing.root.name}-{where}-"
    return cache_dir / f"{prefix}{what}.pt", prefix


def _read_cache(path: Path, listing: FolderListing, size: int) -> torch.Tensor | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images = blob["images"]
        ok = (
            blob.get("version") == CACHE_VERSION
            and blob.get("classes") == listing.classes
            and blob.get("signature") == listing.signature
            and tuple(images.shape) == (len(listing.paths), 3, size, size)
            and images.dtype == torch.uint8
        )
    except FileNotFoundError:
        return None
    except Exception as e:  # a truncated or foreign file: decode again and overwrite it
        warnings.warn(f"ignoring unreadable cache file {path}: {e}", stacklevel=3)
        return None
    return images if ok else None


def _write_cache(path: Path, prefix: str, blob: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should stay readable
            os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for stale in path.parent.glob(prefix + "*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as e:
        # Caching only saves time; say so and continue with the decoded data.
        warnings.warn(f"could not write the decoded-image cache {path}: {e}", stacklevel=3)


@dataclass
class DecodedFolder:
    images: torch.Tensor  # uint8 [N,3,S,S]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    from_cache: bool


def load_image_folder(
    root: Path,
    size: int,
    cache_dir: str | Path | None = None,
    listing: FolderListing | None = None,
) -> DecodedFolder:
    """Decode a class-per-folder tree to uint8 [N,3,size,size], through an on-disk cache keyed by
    the folder's absolute path, decode size, file count and a names+sizes+mtimes signature."""
    listing = listing or scan_image_folder(root)
    cdir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path, prefix = _cache_paths(listing, size, cdir)
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    images = _read_cache(path, listing, size)
    if images is not None:
        return DecodedFolder(images, labels, listing.classes, True)
    images = decode_files(listing.paths, size)
    blob = {
        "version": CACHE_VERSION,
        "root": str(listing.root),
        "signature": listing.signature,
        "classes": listing.classes,
        "images": images,
    }
    _write_cache(path, prefix, blob)
    return DecodedFolder(images, labels, listing.classes, False)

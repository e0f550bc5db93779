"""What a run directory holds, written so that a crash never leaves a half-written file.

Every file is written to a temporary name in the same directory and renamed over the old one:
the rename is atomic on POSIX, so a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

METRIC_COLUMNS = (
    "epoch",
    "updates",
    "samples",
    "grad_evals",
    "lr",
    "batch_size",
    "momentum",
    "noise_scale",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "val_loss",
    "val_acc",
    "epoch_seconds",
    "train_seconds",
    "wall_seconds",
)


# The temporary files of atomic_write_bytes: ``.<name>.<mkstemp's 8 random characters>.tmp``.
# A process killed mid-write (kill -9) leaves one behind; see is_temporary.
TEMP_SUFFIX = ".tmp"
TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def is_temporary(name: str) -> bool:
    """Whether a file name is that of an atomic write's temporary file (and no other)."""
    return TEMP_PATTERN.fullmatch(name) is not None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite the whole metrics CSV (one row per epoch; a few KB, so rewriting is cheap)."""
    extra = sorted({k for row in rows for k in row} - set(METRIC_COLUMNS))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*METRIC_COLUMNS, *extra], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    atomic_write_text(path, out.getvalue())


def _csv_value(value: Any) -> Any:
    # repr() of a float round-trips exactly, so a resumed run's CSV can be compared bit for bit.
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def portable_path(value: object) -> object:
    """A data path as a committed file may hold it: under ``$TRAINREPRO_DATA`` written as
    that variable, any other absolute path reduced to its last folder (the dataset's own name),
    never this machine's layout."""
    if not isinstance(value, str) or not value:
        return value
    data = os.environ.get("TRAINREPRO_DATA")
    path = Path(value).expanduser()
    if data and path.is_absolute():
        try:
            rest = path.resolve().relative_to(Path(data).expanduser().resolve())
        except ValueError:
            pass
        else:
            return "$TRAINREPRO_DATA" + ("" if str(rest) == "." else f"/{rest.as_posix()}")
    if path.is_absolute():
        return f"<local>/{path.name}"
    return value


def portable_paths(value: Any) -> Any:
    """``value`` (nested dicts, lists, strings) with every absolute path, alone or as the value
    of ``key=/path``, through :func:`portable_path`: for reports that record a command or a
    config (lr-find's lr_find.json)."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("/"):
        return portable_path(value)
    key, equals, rest = value.partition("=")
    return f"{key}={portable_path(rest)}" if equals and rest.startswith("/") else value


def versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a run's numbers."""
    import hydra
    import numpy
    import omegaconf
    import torchvision

    import trainrepro

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "trainrepro": trainrepro.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else "n/a",
    }


def determinism() -> dict[str, Any]:
    """torch's switches, as the run ran, that decide whether a CUDA run repeats bit for bit
    (set from the config's ``deterministic``: trainrepro.engine.build.apply_determinism)."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


# What decides what a run computes; results/, runs and docs changing leave the code clean.
CODE_PATHS = ("trainrepro", "conf", "scripts", "pyproject.toml", "constraints.txt")


def git_revision() -> dict[str, Any]:
    """The commit of the trainrepro source that ran, and whether its code (CODE_PATHS) had
    local changes, with a digest of them."""
    src = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    if not status:
        return {"commit": commit, "dirty": False}
    diff = git("diff", "HEAD", "--", *CODE_PATHS) or ""
    # Which uncommitted changes: two runs "dirty" at one commit may still run other code.
    return {"commit": commit, "dirty": True,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()}  # fmt: skip


def code_stamp(revision: dict[str, Any] | None = None) -> str:
    """One word naming the code that runs: the commit, and the digest of uncommitted changes."""
    rev = git_revision() if revision is None else revision
    if rev.get("dirty"):
        return f"{rev['commit'][:12]}+{rev.get('diff_sha256', 'unknown')[:12]}"
    return str(rev["commit"])[:12]


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

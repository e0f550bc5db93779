"""Where a runner's runs go: how many at a time, how many CPU threads each, and on which GPU.

``--gpus 0,1 --jobs-per-gpu 4`` runs eight at a time, four on each GPU: each run sees only its
GPU (``CUDA_VISIBLE_DEVICES``) and gets ``device=cuda``, so a run that cannot reach its GPU
fails instead of training on the CPU. Small models leave a GPU mostly idle (launch latency,
small kernels), so several runs per GPU raise the aggregate throughput (``make bench`` measures
it: ``--concurrent``). Without ``--gpus``, ``--jobs`` runs at a time on the CPU.

Each run's CPU threads (``OMP_NUM_THREADS``) are capped so that jobs x threads <= cores: one
thread pool per run over all cores would make N runs fight over them. An explicit ``--threads``
that oversubscribes is refused; a profile's default is capped, and the runner says so.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from trainrepro.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """``jobs`` runs at a time with ``threads`` CPU threads each; with ``gpus``, each run on
    one of them, ``jobs_per_gpu`` per GPU (``jobs == len(gpus) * jobs_per_gpu``)."""

    jobs: int = 1
    threads: int | None = None
    gpus: tuple[str, ...] = ()
    jobs_per_gpu: int = 1
    note: str = ""  # what was capped, said before the runs start

    def describe(self) -> str:
        where = f" on GPU {','.join(self.gpus)} ({self.jobs_per_gpu} per GPU)" if self.gpus else ""
        threads = f", {self.threads} CPU thread(s) each" if self.threads else ""
        return f"{self.jobs} at a time{where}{threads}"


def parse_gpus(text: str | None, visible: int) -> tuple[str, ...]:
    """``"0,1"`` -> ("0", "1"): distinct indices of GPUs this process sees (``visible`` of
    them). Under an outer ``CUDA_VISIBLE_DEVICES`` the indices count its GPUs, as torch does."""
    if text is None:
        return ()
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() for item in items):
        raise ConfigError("--gpus", text, "must be GPU indices separated by commas, e.g. 0,1")
    if len(set(items)) != len(items):
        raise ConfigError("--gpus", text, "names a GPU twice; use --jobs-per-gpu for several runs")
    if visible == 0:
        raise ConfigError("--gpus", text, "no CUDA GPU is visible to this process")
    too_high = [i for i in items if int(i) >= visible]
    if too_high:
        raise ConfigError("--gpus", text, f"GPU {too_high[0]} does not exist; {visible} visible")
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer:  # pass on the outer names, so a child sees exactly the GPU meant
        names = [name.strip() for name in outer.split(",")]
        return tuple(names[int(i)] for i in items)
    return tuple(items)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(
    jobs: int | None,
    threads: int | None,
    gpus: str | None = None,
    jobs_per_gpu: int | None = None,
    *,
    default_jobs: int = 1,
    default_threads: int | None = None,
    cores: int | None = None,
    visible: int | None = None,
) -> Placement:
    """The placement of explicit options (None: not given) over a profile's defaults.

    ``visible`` (GPUs) and ``cores`` default to this machine's; they are arguments so that
    the rules can be tested on a machine without GPUs."""
    cores = cores or os.cpu_count() or 1
    for key, value in (("--jobs", jobs), ("--jobs-per-gpu", jobs_per_gpu), ("--threads", threads)):
        if value is not None and value < 1:
            raise ConfigError(key, value, "must be >= 1")
    if gpus is None:
        if jobs_per_gpu is not None:
            raise ConfigError("--jobs-per-gpu", jobs_per_gpu, "needs --gpus")
        n_jobs, per_gpu, gpu_ids = jobs or default_jobs, 1, ()
    else:
        gpu_ids = parse_gpus(gpus, visible_gpus() if visible is None else visible)
        per_gpu = jobs_per_gpu or 1
        n_jobs = len(gpu_ids) * per_gpu
        if jobs is not None and jobs != n_jobs:
            raise ConfigError(
                "--jobs", jobs, f"with --gpus the runs at a time are GPUs x --jobs-per-gpu "
                f"= {n_jobs}; drop --jobs or change --jobs-per-gpu"
            )  # fmt: skip
    fair = max(1, cores // n_jobs)
    note = ""
    if threads is not None:
        if threads * n_jobs > cores:
            raise ConfigError(
                "--threads", threads, f"{n_jobs} runs x {threads} threads exceed the {cores} "
                f"CPU cores; at most {fair} per run"
            )  # fmt: skip
        n_threads: int | None = threads
    elif default_threads is not None and default_threads * n_jobs > cores:
        n_threads = fair
        note = f"threads per run capped at {fair} (profile: {default_threads}; {cores} cores)"
    else:
        n_threads = default_threads if default_threads is not None else fair
    return Placement(n_jobs, n_threads, gpu_ids, per_gpu, note)


class GpuSlots:
    """The GPUs of a placement, each lent to ``jobs_per_gpu`` runs at a time."""

    def __init__(self, placement: Placement) -> None:
        self._free: queue.Queue[str] = queue.Queue()
        for _ in range(placement.jobs_per_gpu):
            for gpu in placement.gpus:  # round robin: the first runs spread over every GPU
                self._free.put(gpu)
        self.active = bool(placement.gpus)

    @contextmanager
    def lend(self) -> Iterator[str | None]:
        if not self.active:
            yield None
            return
        gpu = self._free.get()
        try:
            yield gpu
        finally:
            self._free.put(gpu)


def child_env(base: Mapping[str, str], threads: int | None, gpu: str | None) -> dict[str, str]:
    """The environment of one run: its thread count, and the one GPU it may see."""
    env = dict(base)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def add_arguments(parser, jobs_help: str = "runs at a time") -> None:  # noqa: ANN001
    """The placement options, the same in every command that runs a list of runs."""
    parser.add_argument("--jobs", type=int, help=jobs_help)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS per run (jobs x threads "
                        "<= cores; default: cores / jobs)")  # fmt: skip
    parser.add_argument("--gpus", help="GPU indices, e.g. 0,1: each run on one of them, "
                        "with device=cuda")  # fmt: skip
    parser.add_argument("--jobs-per-gpu", type=int, help="runs at a time on each GPU (with --gpus; "
                        "default 1)")  # fmt: skip

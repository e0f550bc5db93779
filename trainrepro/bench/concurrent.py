"""``--concurrent 2,4,8``: N processes updating the same model in the same variant at once on
one device, against one process alone, for each N: whether running several trainings side by
side gets more out of the device (issue 20 asks for 2x with 8 runs on one GPU).

Each process is spawned (safe with CUDA), builds the model, warms up, then waits at a barrier
so that all N time their windows together; its threads are the parent's divided by N, so the
processes do not oversubscribe the CPU cores. The figure of each process is its median window,
which discounts the last windows of the slowest process, run when the others have finished.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import statistics

import torch

from trainrepro.bench.speed import (
    VARIANTS,
    _timed,
    _window_steps,
    build_model,
    fixed_batches,
    interleaved,
    make_step,
)
from trainrepro.data.splits import DataSplits
from trainrepro.engine.build import apply_speed_options


def _process(barrier, results, name: str, variant: str, data: DataSplits, threads: int, timing):
    """One spawned process: warm up, wait for the others, put its median images/s."""
    torch.set_num_threads(threads)
    device, batch_size = timing["device"], timing["batch_size"]
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the parent's sections run
    v = VARIANTS[variant]
    batches = fixed_batches(data, device, batch_size, count=4)
    model = build_model(name, data, device)
    model = apply_speed_options(model, channels_last=v.channels_last, compile=v.compile)
    model.train()
    step = make_step(model, device, v.precision)
    counter = iter(range(1 << 62))

    def call() -> object:
        return step(*batches[next(counter) % len(batches)])

    _timed(call, device)  # oneDNN / cuDNN set-up, compilation
    steps = _window_steps(timing["steps"], _timed(call, device), timing["window_seconds"])
    barrier.wait()
    windows = timing["windows"]
    times = interleaved({variant: call}, device=device, windows=windows, steps_per_window=steps)
    results.put(batch_size / statistics.median(times[variant]))


def _images_per_s(n: int, name: str, variant: str, data: DataSplits, threads: int, timing):
    """Images/s of each of ``n`` processes timed together."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    args = (barrier, results, name, variant, data, threads, timing)
    procs = [ctx.Process(target=_process, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    rates: list[float] = []
    while len(rates) < n:  # read before join: a child with a full queue would not exit
        try:
            rates.append(results.get(timeout=1.0))
        except queue.Empty:
            if failed := [p.exitcode for p in procs if p.exitcode]:
                for p in procs:  # the others would wait at the barrier for ever
                    p.terminate()
                raise RuntimeError(f"concurrent bench: exit codes {failed}") from None
    for p in procs:
        p.join()
    return rates


def bench_concurrent(
    counts: int | list[int], names: list[str], variant: str, data: DataSplits, timing
) -> list:
    """Per model: images/s of one process with all the threads, then, for each n of
    ``counts``, of n at once with 1/n of them each; ``concurrent_vs_alone`` is the aggregate
    over the one."""
    threads = torch.get_num_threads()
    rows = []
    for name in names:
        (alone,) = _images_per_s(1, name, variant, data, threads, timing)
        for n in [counts] if isinstance(counts, int) else counts:
            together = _images_per_s(n, name, variant, data, max(1, threads // n), timing)
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "processes": n,
                    "threads_per_process": max(1, threads // n),
                    "alone_images_per_s": alone,
                    "concurrent_images_per_s": sum(together),
                    "per_process_images_per_s": together,
                    "concurrent_vs_alone": sum(together) / alone,
                }
            )
    return rows


def print_concurrent(rows: list[dict]) -> None:
    print(f"\n{'model':<13} {'variant':<16} {'alone':>9} {'at once':>9} {'ratio':>7}   (images/s)")
    for r in rows:
        print(
            f"{r['model']:<13} {r['variant']:<16} {r['alone_images_per_s']:>9.1f} "
            f"{r['concurrent_images_per_s']:>9.1f} {r['concurrent_vs_alone']:>6.2f}x "
            f"({r['processes']} processes, {r['threads_per_process']} threads each)"
        )

"""Training-step speed for ``make bench``: precision, memory layout and torch.compile variants,
the trainer's overhead against a bare loop, and the FLOP/s and MFU achieved
(trainrepro.bench.flops, against the peak of trainrepro.bench.peak).

Every figure is a full update (forward, backward, optimizer step) of the project's models with
their norm layers, on batches made by the trainer's on-device data path beforehand, so the data
path is not timed here (trainrepro.bench.pipeline times it).

Timing on a shared machine: the variants of one model are timed in interleaved windows
(round r times every variant once, in an order rotated each round), so load from other
processes falls on all of them alike; each variant's speed-up is the median over rounds of its
ratio to fp32 *in the same round*, and its images/s the median over windows.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainrepro.bench.flops import count_update_flops, utilisation
from trainrepro.bench.peak import peak_precision
from trainrepro.data.loader import DeviceLoader
from trainrepro.data.splits import Augment, DataSplits
from trainrepro.engine.build import apply_speed_options
from trainrepro.models import create_model
from trainrepro.norms.factory import create_norm

# name -> (model builder kwargs, the equivalent config overrides)
MODELS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "wrn16-4": ({"name": "wrn", "depth": 16, "width": 4}, ("model=wrn",)),
    "resnet20": (
        {"name": "resnet_cifar", "depth": 20},
        ("model=resnet_cifar", "model.depth=20"),
    ),
    "lenet5": ({"name": "lenet5"}, ("model=lenet5",)),
    # The SGDR paper's model (36.5M parameters): big enough to fill a GPU (issue 20's >= 50%).
    "wrn28-10": (
        {"name": "wrn", "depth": 28, "width": 10},
        ("model=wrn", "model.depth=28", "model.width=10"),
    ),
    # The quick CPU profiles' models (conf/profile/smith18_quick.yaml, radam_quick.yaml).
    "wrn10-1": (
        {"name": "wrn", "depth": 10, "width": 1},
        ("model=wrn", "model.depth=10", "model.width=1"),
    ),
    "resnet8": ({"name": "resnet_cifar", "depth": 8}, ("model=resnet_cifar", "model.depth=8")),
    "resnet18-w16": (
        {"name": "resnet", "depth": 18, "width": 16},
        ("model=resnet", "model.depth=18", "model.width=16"),
    ),
}


@dataclass(frozen=True)
class Variant:
    """How one training step runs: the config keys precision, channels_last and compile."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def overrides(self) -> tuple[str, ...]:
        return (
            f"precision={self.precision}",
            f"channels_last={str(self.channels_last).lower()}",
            f"compile={str(self.compile).lower()}",
        )


VARIANTS: dict[str, Variant] = {
    "fp32": Variant(),
    "channels_last": Variant(channels_last=True),
    "bf16": Variant(precision="bf16"),
    "bf16+cl": Variant(precision="bf16", channels_last=True),
    "compile": Variant(compile=True),
    "compile+bf16+cl": Variant(precision="bf16", channels_last=True, compile=True),
}
DEFAULT_VARIANTS = ("fp32", "channels_last", "bf16", "bf16+cl")
# Issue 20: the trainer's update path within 3% of a bare loop; below it, the table marks it.
TRAINER_TARGET = 0.97
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}


def build_model(name: str, data: DataSplits, device: torch.device) -> torch.nn.Module:
    return _build(name, data.num_classes, data.in_channels, data.image_size).to(device)


def _build(name: str, num_classes: int, in_channels: int, image_size: int) -> torch.nn.Module:
    spec = dict(MODELS[name][0])
    torch.manual_seed(0)
    return create_model(
        spec.pop("name"),
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        norm_layer=create_norm("bn"),
        **spec,
    )


def flops_per_image(name: str, data: DataSplits, batch_size: int, channels_last: bool) -> float:
    """FLOPs of one update of model ``name`` per image of a ``batch_size`` batch
    (trainrepro.bench.flops.count_update_flops), counted once per process for each (model,
    image shape, batch, channels_last): the sections and variants share the count."""
    shape = (data.num_classes, data.in_channels, data.image_size)
    return _flops_per_image(name, shape, batch_size, channels_last)


@functools.cache
def _flops_per_image(
    name: str, shape: tuple[int, int, int], batch_size: int, channels_last: bool
) -> float:
    num_classes, in_channels, image_size = shape
    model = _build(name, num_classes, in_channels, image_size)
    image = (in_channels, image_size, image_size)
    flops = count_update_flops(model, batch_size, image, num_classes, channels_last=channels_last)
    return flops / batch_size


def fixed_batches(
    data: DataSplits, device: torch.device, batch_size: int, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` augmented training batches from the trainer's on-device path, made once."""
    loader = DeviceLoader(
        data.train.images,
        data.train.labels,
        mean=data.mean,
        std=data.std,
        device=device,
        augment=data.augment or Augment(4, True),
        seed=0,
    )
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    epoch = 0
    while len(out) < count:
        for batch in loader.batches(epoch, batch_size):
            out.append(batch)
            if len(out) == count:
                break
        epoch += 1
    return out


def make_step(
    model: torch.nn.Module, device: torch.device, precision: str, lr: float = 0.01
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A bare PyTorch training step: SGD with momentum, autocast when ``precision`` says."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    dtype = AUTOCAST[precision]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    steps: dict[str, Callable[[], object]],
    *,
    device: torch.device,
    windows: int,
    steps_per_window: int,
) -> dict[str, list[float]]:
    """Seconds per update of each callable in each of ``windows`` rounds; in every round each
    callable runs one window of ``steps_per_window`` updates, the order rotated per round."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(windows):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps_per_window):
                steps[name]()
            _sync(device)
            times[name].append((time.perf_counter() - start) / steps_per_window)
    return times


def _timed(call: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - start


def _window_steps(steps: int | None, seconds_per_step: float, window_seconds: float) -> int:
    """``steps`` if given, else as many updates as fill ``window_seconds``."""
    return steps if steps else max(1, round(window_seconds / seconds_per_step))


def _ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Median over rounds of (base's seconds / variant's seconds) in the same round."""
    return {
        name: statistics.median(b / t for b, t in zip(times[base], ts, strict=True))
        for name, ts in times.items()
    }


def bench_variants(
    name: str,
    data: DataSplits,
    variants: list[str],
    *,
    device: torch.device,
    batch_size: int,
    windows: int,
    steps: int | None = None,
    window_seconds: float = 1.0,
    peaks: dict[str, float] | None = None,
) -> list[dict]:
    """Images/s, speed-up over fp32, TFLOP/s and MFU (against ``peaks``, TFLOP/s by precision)
    of each variant of model ``name``."""
    batches = fixed_batches(data, device, batch_size, count=4)
    reference = build_model(name, data, device)
    variants = ["fp32", *(v for v in variants if v != "fp32")]
    calls: dict[str, Callable[[], object]] = {}
    compile_s: dict[str, float | None] = {}
    for vname in variants:
        v = VARIANTS[vname]
        model = apply_speed_options(
            copy.deepcopy(reference), channels_last=v.channels_last, compile=v.compile
        )
        model.train()
        step = make_step(model, device, v.precision)
        counter = iter(range(1 << 62))

        def call(step=step, counter=counter) -> object:
            return step(*batches[next(counter) % len(batches)])

        # Warm-up: two updates (oneDNN primitive creation; compilation for compiled variants).
        first = _timed(call, device)
        second = _timed(call, device)
        if vname == "fp32":
            steps = _window_steps(steps, second, window_seconds)
        compile_s[vname] = first if v.compile else None
        calls[vname] = call
    times = interleaved(calls, device=device, windows=windows, steps_per_window=steps)
    ratios = _ratios(times, "fp32")
    rows = []
    for vname in variants:
        v = VARIANTS[vname]
        sec = statistics.median(times[vname])
        flops = flops_per_image(name, data, batch_size, v.channels_last)
        precision = peak_precision(v.precision, device)
        rows.append(
            {
                "model": name,
                "variant": vname,
                **v.__dict__,
                "images_per_s": batch_size / sec,
                "speedup_vs_fp32": ratios[vname],
                "gflop_per_image": flops / 1e9,
                "gflop_per_step": flops * batch_size / 1e9,
                "peak_precision": precision,
                **utilisation(batch_size / sec, flops / 1e9, precision, peaks or {}),
                "steps_per_window": steps,
                # The first update of a compiled variant, compilation included (less one
                # ordinary update's time).
                "compile_s": None if compile_s[vname] is None else compile_s[vname] - sec,
                "windows_s_per_step": times[vname],
            }
        )
    return rows


def compose_config(overrides: list[str]):
    """The run config these overrides give, composed as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    from trainrepro.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def bench_trainer(
    name: str,
    dataset_overrides: list[str],
    *,
    device: torch.device,
    batch_size: int,
    windows: int,
    steps: int | None = None,
    window_seconds: float = 1.0,
    variant: str = "fp32",
    peaks: dict[str, float] | None = None,
) -> dict:
    """Images/s, TFLOP/s and MFU of the trainer's update path (a Run from ``build_run`` of the
    composed config, updated by ``trainrepro.engine.train._update`` with the epoch loop's
    per-update bookkeeping) against a bare PyTorch loop (``make_step``) on a copy of the same
    model, on the same batches; ``meets_target``: the ratio is at least TRAINER_TARGET."""
    from trainrepro.engine.build import build_run
    from trainrepro.engine.train import SYNC_EVERY, _update
    from trainrepro.optim.factory import set_lr, set_momentum

    v = VARIANTS[variant]
    cfg = compose_config(
        [
            *MODELS[name][1],
            *dataset_overrides,
            *v.overrides(),
            "normalization=bn",
            "optimizer=sgd",
            "schedule=constant",
            f"device={device.type}",
            f"batch_size={batch_size}",
            "epochs=1",
            "progress=false",
        ]
    )
    run = build_run(cfg)
    bare_model = copy.deepcopy(run.model)
    bare_step = make_step(bare_model, device, v.precision, lr=run.optimizer.defaults["lr"])
    batches = list(run.train_loader.batches(0, batch_size))
    run.model.train()
    bare_model.train()
    n = len(batches)
    # The epoch loop reads its running totals back to the host every update on CPU, every
    # SYNC_EVERY updates elsewhere; the bare loop reads its loss as often, so the ratio prices
    # the trainer's bookkeeping, not a device sync one loop makes and the other does not.
    read_every = 1 if device.type == "cpu" else SYNC_EVERY
    state = {"i": 0, "updates": 0, "loss": 0.0, "correct": 0}
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)

    def trainer() -> None:
        # What trainrepro.engine.train._train_epoch does per update on top of _update.
        x, y = batches[state["i"] % n]
        state["i"] += 1
        point = run.schedule(state["i"] / n, state["updates"])
        set_lr(run.optimizer, point.lr)
        if point.momentum is not None:
            set_momentum(run.optimizer, point.momentum)
        # (logits, loss, ...): later fields, e.g. gradient evaluations, are not needed here.
        out = _update(run, x, y, cfg.max_micro_batch, update=state["updates"] + 1)
        logits, loss = out[0], out[1]
        state["updates"] += 1
        loss_sum.add_(loss.double() * len(y))
        correct.add_((logits.argmax(1) == y).sum())
        if state["updates"] % read_every == 0:
            state["loss"], state["correct"] = loss_sum.item(), int(correct.item())

    bare_i = iter(range(1 << 62))

    def bare() -> None:
        k = next(bare_i)
        loss = bare_step(*batches[k % n])
        if (k + 1) % read_every == 0:
            loss.item()

    trainer()
    bare()
    steps = _window_steps(steps, _timed(bare, device), window_seconds)
    trainer()
    times = interleaved(
        {"trainer": trainer, "bare": bare}, device=device, windows=windows, steps_per_window=steps
    )
    ratio = _ratios(times, "bare")["trainer"]
    trainer_ips = batch_size / statistics.median(times["trainer"])
    bare_ips = batch_size / statistics.median(times["bare"])
    gflop = flops_per_image(name, run.data, batch_size, v.channels_last) / 1e9
    precision = peak_precision(v.precision, device)
    return {
        "model": name,
        "variant": variant,
        "trainer_images_per_s": trainer_ips,
        "bare_images_per_s": bare_ips,
        "trainer_vs_bare": ratio,
        "meets_target": ratio >= TRAINER_TARGET,
        "gflop_per_image": gflop,
        "peak_precision": precision,
        **utilisation(trainer_ips, gflop, precision, peaks or {}, "trainer_"),
        **utilisation(bare_ips, gflop, precision, peaks or {}, "bare_"),
        "steps_per_window": steps,
        "trainer_windows_s_per_step": times["trainer"],
        "bare_windows_s_per_step": times["bare"],
    }

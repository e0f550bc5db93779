"""Build everything a run needs from its config, validating first so nothing is half-made.

Each group node is handed to ``trainrepro.config.instantiate``; the objects below are plain
PyTorch objects, and no ``DictConfig`` travels past this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from trainrepro.config import check_booleans, instantiate
from trainrepro.data.loader import make_loader
from trainrepro.data.splits import DataSplits
from trainrepro.engine.run import Callback, Run
from trainrepro.errors import ConfigError
from trainrepro.norms.batch_checks import check_batch
from trainrepro.norms.factory import NormFactory, apply_norm_options
from trainrepro.optim.decoupled import normalize_weight_decay
from trainrepro.optim.factory import get_momentum
from trainrepro.optim.update_rules import update_rule_for
from trainrepro.schedules import Schedule

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
# The workspace settings that make cuBLAS deterministic (CUDA >= 10.2; NVIDIA's cuBLAS docs,
# "Results reproducibility"); deterministic=true sets the first when the variable is unset.
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX). Without them bf16
    is emulated and slower than fp32, so precision=bf16 is refused on such a CPU."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError("device", name, f"must be one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "CUDA is not available on this machine")
    return torch.device(name)


def check_top_level(cfg: DictConfig) -> torch.device:
    """Validate the run's own keys; return the device they select."""
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(key, value, "must be a positive integer")
    if not isinstance(cfg.seed, int):
        raise ConfigError("seed", cfg.seed, "must be an integer")
    micro = cfg.max_micro_batch
    if micro is not None and (not isinstance(micro, int) or isinstance(micro, bool) or micro <= 0):
        raise ConfigError("max_micro_batch", micro, "must be a positive integer or null")
    device = resolve_device(str(cfg.device))
    if cfg.precision not in PRECISIONS:
        raise ConfigError("precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision", cfg.precision, "fp16 runs only on CUDA; on CPU use bf16")
    if cfg.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError(
            "precision", cfg.precision, "this CPU has no bf16 units (AVX512-BF16/AMX); use fp32"
        )
    check_booleans(cfg)  # resume, progress, channels_last, compile, plan: the CLI's check too
    cublas = os.environ.get(CUBLAS_ENV)
    if cfg.get("deterministic", False) and cublas not in (None, *CUBLAS_DETERMINISTIC):
        raise ConfigError(
            CUBLAS_ENV, cublas, "deterministic=true needs :4096:8 or :16:8 (or unset: we set it)"
        )
    return device


def apply_determinism(deterministic: bool, device: torch.device) -> None:
    """Set torch's process-wide switches for this run (so a later run in the process resets
    them). ``deterministic``: only deterministic kernels (an op that has none raises), cuDNN
    without autotuning, and cuBLAS's fixed workspace, whose variable cuBLAS reads once, when
    its first handle is made: at the first CUDA matmul, which comes after this."""
    if deterministic:
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC[0])
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    # For speed: cuDNN times its candidate kernels per input shape and keeps the fastest, and
    # which wins can change from run to run, so runs differ in the last bits from the start.
    torch.backends.cudnn.benchmark = not deterministic and device.type == "cuda"


def _to_channels_last(module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: 4-D inputs in channels-last (NHWC) memory order, as the weights are."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if isinstance(a, torch.Tensor) and a.dim() == 4
        else a
        for a in args
    )


def apply_speed_options(
    model: torch.nn.Module, *, channels_last: bool = False, compile: bool = False
) -> torch.nn.Module:
    """Apply the config's speed switches to ``model`` in place (and return it).

    ``channels_last``: 4-D weights in NHWC order and a pre-hook converting the inputs, so
    oneDNN/cuDNN run their NHWC kernels without reordering every activation (the trainer's
    data stays NCHW). ``compile``: ``nn.Module.compile`` (torch.compile of ``forward``),
    which keeps the module and its ``state_dict`` keys, so checkpoints are unchanged.
    Both change only the order of floating-point operations.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_to_channels_last)
    if compile:
        model.compile()
    return model


def epoch_batch_sizes(schedule: Schedule, epochs: int, n_train: int) -> list[int]:
    """The batch size of every epoch, read at its start as the trainer reads it."""
    sizes, updates = [], 0
    for epoch in range(epochs):
        batch_size = schedule(float(epoch), updates).batch_size
        sizes.append(batch_size)
        updates += n_train // batch_size if batch_size > 0 else 0
    return sizes


def check_batch_sizes(
    schedule: Schedule,
    epochs: int,
    n_train: int,
    norm: NormFactory | None = None,
    max_micro_batch: int | None = None,
) -> None:
    """Every epoch must hold at least one full batch (batches never straddle epochs), and
    ghost batches of ``norm`` must tile every batch and micro-batch the schedule will use."""
    for epoch, batch_size in enumerate(epoch_batch_sizes(schedule, epochs, n_train)):
        if batch_size <= 0:
            raise ConfigError("batch_size", batch_size, f"the schedule gives it at epoch {epoch}")
        if batch_size > n_train:
            raise ConfigError(
                "batch_size",
                batch_size,
                f"exceeds the {n_train} training images (at epoch {epoch})",
            )
        if norm is not None:
            check_batch(norm, batch_size, max_micro_batch=max_micro_batch)


def make_schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> Schedule:
    return instantiate(
        "schedule",
        cfg.schedule,
        lr=optimizer.defaults["lr"],
        batch_size=cfg.batch_size,
        momentum=get_momentum(optimizer),
        epochs=cfg.epochs,
    )


def make_optimizer_and_schedule(
    cfg: DictConfig, model: torch.nn.Module, train_size: int | None = None
) -> tuple[torch.optim.Optimizer, Schedule, str | None]:
    """The optimizer on ``model`` and its schedule. An ``optimizer.weight_decay_norm`` (sgdw,
    adamw) becomes the decay here, from the schedule's batch size, ``train_size`` and the
    epochs (trainrepro.optim.decoupled); before the data is read (``train_size`` None) the
    batch size stands in for it, which checks the keys only. Also returns the note saying
    which decay was derived, or None."""
    optimizer = instantiate("optimizer", cfg.optimizer, model)
    schedule = make_schedule(cfg, optimizer)
    n = cfg.batch_size if train_size is None else train_size
    note = normalize_weight_decay(optimizer, epoch_batch_sizes(schedule, cfg.epochs, n), n)
    return optimizer, schedule, note


def make_callbacks(cfg: DictConfig, model: torch.nn.Module) -> list[Callback]:
    """One callback per entry of ``cfg.callbacks`` (name -> node), in config order."""
    nodes = cfg.get("callbacks") or {}
    if not isinstance(nodes, Mapping | DictConfig):
        raise ConfigError("callbacks", nodes, "must map names to nodes; add one with +callbacks=")
    callbacks = []
    for name, node in nodes.items():
        callback = instantiate(f"callbacks.{name}", node, model)
        if not isinstance(callback, Callback):
            target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else node
            raise ConfigError(f"callbacks.{name}._target_", target, "does not build a Callback")
        callbacks.append(callback)
    return callbacks


def make_logger(cfg: DictConfig) -> list[Callback]:
    """The run's logger (``cfg.logger``, conf/logger/) as a callback, or none for ``csv``:
    metrics.csv is written whatever the logger. It goes after ``cfg.callbacks``'s, so it logs
    the columns they add; a missing package (wandb, mlflow) is refused here, before training."""
    node = cfg.get("logger")
    logger = None if node is None else instantiate("logger", node)
    if logger is None:
        return []
    if not isinstance(logger, Callback):
        raise ConfigError("logger._target_", node.get("_target_"), "does not build a Callback")
    return [logger]


def check_init(cfg: DictConfig) -> Any:
    """The run's initializer (``+init=<option>``, built from its node), or None without one.

    An initializer is a callable ``init(model, *, input_shape, num_classes, seed) -> note``
    with a ``name``; it reaches the engine only through its ``_target_`` (conf/init/).
    """
    node = cfg.get("init")
    return None if node is None else instantiate("init", node)


def apply_init(cfg: DictConfig, model: torch.nn.Module, data: DataSplits) -> None:
    """Run the configured initializer on a freshly built model and add its note to the run's
    notes (summary.json). Skipped on resume: the checkpoint holds the weights."""
    init = check_init(cfg)
    if init is None:
        return
    name = getattr(init, "name", "init")
    if cfg.resume:
        data.notes.append(f"init={name}: skipped on resume (the weights come from the checkpoint)")
        return
    note = init(
        model,
        input_shape=(data.in_channels, data.image_size, data.image_size),
        num_classes=data.num_classes,
        seed=cfg.seed,
    )
    print(note)
    data.notes.append(note)


def check_config(cfg: DictConfig) -> tuple[torch.device, Any]:
    """Every check that needs no data, in one place: the run's own keys, the normalization,
    the optimizer and schedule (built on a stand-in model), the init. Returns the device and
    the norm layer factory. `trainrepro reproduce` runs it on every run before starting any."""
    device = check_top_level(cfg)
    norm_layer = instantiate("normalization", cfg.normalization)
    # The stand-in has a norm layer so that keys about norm parameters (norm_decay_target)
    # validate here too; whether the real model has one is checked on the real model below.
    stand_in = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
    make_optimizer_and_schedule(cfg, stand_in)
    check_init(cfg)  # +init=metainit: its keys, before the data is read
    make_logger(cfg)  # its keys, and that its package is installed
    return device, norm_layer


def build_run(cfg: DictConfig) -> Run:
    """Build data, model, optimizer and schedule, cheap checks first.

    The optimizer and schedule are first built on a stand-in model (check_config), so a bad
    learning rate or milestone is reported before the dataset (the slow part, and the
    likeliest to be missing) is read.
    """
    device, norm_layer = check_config(cfg)
    apply_determinism(cfg.get("deterministic", False), device)

    torch.manual_seed(cfg.seed)
    data: DataSplits = instantiate("dataset", cfg.dataset)
    model = instantiate(
        "model",
        cfg.model,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        norm_layer=norm_layer,
    )
    model = apply_norm_options(model, norm_layer).to(device)  # e.g. weight standardization
    apply_init(cfg, model, data)  # e.g. MetaInit; before compile, not on resume
    apply_speed_options(
        model,
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
    )
    optimizer, schedule, decay_note = make_optimizer_and_schedule(
        cfg, model, len(data.train.labels)
    )
    if decay_note:
        data.notes.append(decay_note)
    check_batch_sizes(schedule, cfg.epochs, len(data.train.labels), norm_layer, cfg.max_micro_batch)
    callbacks = make_callbacks(cfg, model) + make_logger(cfg)

    def loader(split: Any, augment: Any) -> Any:
        return make_loader(
            split, mean=data.mean, std=data.std, device=device, augment=augment, seed=cfg.seed
        )

    autocast_dtype = PRECISIONS[cfg.precision]
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    return Run(
        data=data,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        train_loader=loader(data.train, data.augment),
        test_loader=loader(data.test, None),
        val_loader=loader(data.val, None) if data.val is not None else None,
        device=device,
        autocast_dtype=autocast_dtype,
        scaler=scaler,
        callbacks=callbacks,
        rule=update_rule_for(optimizer, model),
    )

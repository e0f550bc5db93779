"""``trainrepro params``: the size and cost of the model a run would build; trains nothing.

    trainrepro params model=mobilenetv2 model.width_mult=0.5,0.75,1.0
    trainrepro params model=mobilenetv2,resnet,wrn --json

Every combination of the comma lists (the cartesian product, first key slowest, as a sweep
orders its jobs) is composed as a run would compose it (trainrepro.config.check_overrides),
its normalization and model are built on the meta device for the dataset's image shape and
class count, and one row is printed: the trainable parameters, and the multiply-adds (MAdds)
of one forward pass of one image, the cost measure of the MobileNet papers (Howard et al. 2017;
Sandler et al. 2018, Table 4: 300M for MobileNetV2 at 224x224), one per multiply-accumulate.
MAdds = FLOPs / 2, with the FLOPs of FlopCounterMode (trainrepro.models.cost.forward_flops):
convolutions, depthwise ones at k*k*C*H*W (k*k*Cin/groups*Cout*Hout*Wout in general), and
linear layers; biases, norm layers, activations, pooling and residual additions are not
counted. The shapes of the built-in datasets are known from their configs, so no data is read
(a dataset of a user's own builder is built once to learn its shape). The optimizer, schedule
and run keys are not checked (`trainrepro plan` does that). Nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from trainrepro.config import check_overrides, instantiate, resolve_target
from trainrepro.data import builders
from trainrepro.data.synthetic import SHAPES
from trainrepro.errors import ConfigError, check_int
from trainrepro.models.cost import forward_flops
from trainrepro.norms.factory import apply_norm_options

# (classes, channels, image size) of the built-in datasets whose shape is fixed.
FIXED_SHAPES = {
    builders.cifar10: (10, 3, 32),
    builders.cifar100: (100, 3, 32),
    builders.mnist: (10, 1, 28),
}


def dataset_shape(node: DictConfig) -> tuple[int, int, int]:
    """(classes, channels, image size) of the dataset ``node`` configures, without reading it."""
    builder = resolve_target(node.get("_target_"), "dataset._target_")
    if builder in FIXED_SHAPES:
        return FIXED_SHAPES[builder]
    if builder is builders.synthetic:
        classes = check_int("dataset.num_classes", node.get("num_classes", 10), 2)
        if classes > len(SHAPES):
            raise ConfigError("dataset.num_classes", classes, f"must be <= {len(SHAPES)}")
        return classes, 3, check_int("dataset.image_size", node.get("image_size", 32), 8)
    if builder is builders.imagefolder:
        size = check_int("dataset.image_size", node.get("image_size", 32), 1)
        root = node.get("root")
        train = Path(str(root or "")).expanduser() / str(node.get("train_dir", "train"))
        if not root or not train.is_dir():
            raise ConfigError("dataset.root", root, f"has no train folder {train}")
        # The class folders, as the builder lists them; no image is opened.
        classes = [e for e in os.scandir(train) if e.is_dir() and not e.name.startswith(".")]
        if not classes:
            raise ConfigError("dataset.root", root, f"{train} has no class folders")
        return len(classes), 3, size
    data = instantiate("dataset", node)  # a builder of the user's own: read it once
    return data.num_classes, data.in_channels, data.image_size


def count(cfg: DictConfig) -> dict[str, Any]:
    """The model of ``cfg``, built on the meta device: its name, input, trainable parameters
    and MAdds of one forward pass of one image (see the module docstring)."""
    classes, channels, size = dataset_shape(cfg.dataset)
    norm_layer = instantiate("normalization", cfg.normalization)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = instantiate(
            "model",
            cfg.model,
            num_classes=classes,
            in_channels=channels,
            image_size=size,
            norm_layer=norm_layer,
        )
        model = apply_norm_options(model, norm_layer)  # e.g. weight standardization
    flops = forward_flops(model, (channels, size, size))
    return {
        "model": str(cfg.model.get("name", cfg.model.get("_target_"))),
        "dataset": str(cfg.dataset.get("name", cfg.dataset.get("_target_"))),
        "input": [channels, size, size],
        "num_classes": classes,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "madds": flops // 2,
        "flops": flops,
    }


def combinations(overrides: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(the swept keys, the overrides of each combination): ``a=1,2 b=x`` -> ``[a]``,
    ``[[a=1, b=x], [a=2, b=x]]``. Hydra's own keys are passed on as they are."""
    parser = OverridesParser.create()
    keys, choices = [], []
    for line in overrides:
        (o,) = parser.parse_overrides([line])
        if o.is_sweep_override() and not o.key_or_group.startswith("hydra"):
            key = o.get_key_element()
            keys.append(key)
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([line])
    return keys, [list(c) for c in itertools.product(*choices)]


def survey(args: Sequence[str], config_dir: str | None = None) -> list[dict[str, Any]]:
    """One row per combination of ``args`` (overrides, comma lists expanded), each with the
    swept keys' values under "swept"; every combination is checked before any is counted."""
    flags = [] if config_dir is None else ["--config-dir", config_dir]
    first = check_overrides([*flags, *args])  # every swept option named, syntax, switches
    keys, combos = combinations(args)
    configs = [first] + [check_overrides([*flags, *c]) for c in combos[1:]]
    rows = []
    for combo, cfg in zip(combos, configs, strict=True):
        values = dict(o.split("=", 1) for o in combo)
        rows.append({"swept": {k: values[k] for k in keys}, **count(cfg)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a table: swept keys, model (unless swept), input, classes, params, MAdds."""
    keys = list(rows[0]["swept"])
    head = [*keys, *([] if "model" in keys else ["model"]), "input", "classes", "params", "MAdds"]
    body = [
        [
            *row["swept"].values(),
            *([] if "model" in keys else [row["model"]]),
            "x".join(map(str, row["input"])),
            str(row["num_classes"]),
            f"{row['params']:,}",
            f"{row['madds']:,}",
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    numeric = len(head) - 3  # classes, params and MAdds are right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    note = "MAdds: multiply-adds of one forward pass of one image (convolutions, linear layers)"
    return "\n".join([line(head), *map(line, body), note])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainrepro params",
        description="Trainable parameters and multiply-adds (MAdds, FLOPs/2, of one forward pass "
        "of one image at the dataset's shape) of the model each combination of the overrides "
        "would build; a comma list (model.width_mult=0.5,1.0) gives one row per value. Built "
        "on the meta device: no data is read, nothing is trained or written.",
        epilog="example: trainrepro params model=mobilenetv2,resnet_cifar model.width_mult=0.5,1",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="as for a run")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--config-dir", default=None, help="a folder of your own configs, as for a run")
    p.add_argument(
        "-m", "--multirun", action="store_true", help="accepted; comma lists always expand"
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        rows = survey(args.overrides, args.config_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0

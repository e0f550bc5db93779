"""``trainrepro --help`` and ``trainrepro help [command]``: one page for the whole tool.

The groups and their options are read from the conf/ tree and the key defaults from
conf/config.yaml, so the page follows the configs without being edited. Nothing is composed
and nothing heavy is imported: help is instant and works without data. Hydra's own page stays
behind ``--hydra-help``.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import Any

import yaml

from trainrepro.config import CONF_DIR, CONFIG_NAME, groups, options
from trainrepro.errors import ConfigError

COMMANDS = {
    "run": "train one run (what a bare `trainrepro KEY=VALUE ...` does); -m KEY=A,B sweeps",
    "plan": "print the schedule a run would follow (lr, batch, updates, test images); "
    "trains nothing",
    "reproduce": "run a paper's declared runs, restartably, and write its report",
    "cv": "k-fold cross-validation over a grid of overrides, then train the best point",
    "bn-alpha": "pick the inference example-weighting alpha for a finished run",
    "lr-find": "LR range test (Smith 2017): train with a rising lr, suggest lr bounds; "
    "writes only its report",
    "params": "trainable parameters and multiply-adds (MAdds) of the model; a comma list gives "
    "a table; writes nothing",
    "ensemble": "evaluate a run's weight snapshots (+callbacks=snapshots) alone and as "
    "ensembles of the last M; writes ensemble.csv/.json",
    "help": "this page; `trainrepro help <command>` shows that command's page",
}
# Commands with an argument parser of their own, imported by trainrepro/cli.py only when asked
# for: "module:function", the function taking the arguments after the command's name and
# returning the exit status. Their page is their ``--help``.
SUBCOMMANDS = {
    "reproduce": "trainrepro.reproduce.cli:main",
    "cv": "trainrepro.analysis.cv:main",
    "bn-alpha": "trainrepro.analysis.bn_alpha:main",
    "lr-find": "trainrepro.analysis.lr_find:main",
    "params": "trainrepro.analysis.params:main",
    "ensemble": "trainrepro.analysis.ensemble:main",
}
ARGPARSE_COMMANDS = tuple(SUBCOMMANDS)
# The keys a first run needs; their defaults are read from conf/config.yaml.
KEYS = {
    "epochs": "training epochs",
    "seed": "model init, data order and augmentation",
    "device": "auto | cpu | cuda (auto picks CUDA when present)",
    "precision": "fp32 | bf16 | fp16 (autocast; fp16 on CUDA only)",
    "batch_size": "training batch (a schedule may change it between epochs)",
    "resume": "continue the run in hydra.run.dir from its checkpoint",
}
PLAN_PAGE = """\
usage: trainrepro plan [GROUP=OPTION | KEY=VALUE ...]

Print what a run with these overrides would do, and train and write nothing: per epoch the
lr and momentum at the epoch's first update, the batch size, the noise scale
lr/(1-m) * (N/B - 1) and the cumulative updates; then the totals and how many test images
each end-of-epoch evaluation scores (dataset.test_size). The config is checked as a run
would check it; the dataset is read only for its sizes.
`trainrepro plan ...` is `trainrepro ... +plan=true`.

example: trainrepro plan model=lenet5 dataset=synthetic schedule=cosine epochs=10"""
WIDTH = 100
# Presets list `profile` in their defaults, so after +experiment it is picked without the +.
GROUP_SYNTAX = {
    "profile": "profile=NAME (after +experiment; alone: +profile=NAME)",
    "hparams_search": "-m hparams_search=NAME (Optuna)",  # `optional ...: null` in the defaults
}


def route(args: list[str]) -> tuple[str | None, list[str]]:
    """(page, args): the page ``args`` ask for (print it and exit 0), or None and the
    arguments to go on with. ``help cv`` becomes ``cv --help``, which argparse answers."""
    if args[:1] == ["help"]:
        if len(args) > 2:
            raise ConfigError("help", " ".join(args[1:]), "takes one command")
        topic = args[1] if len(args) == 2 else "help"
        if topic not in COMMANDS:
            raise ConfigError("help", topic, f"unknown command; valid: {', '.join(COMMANDS)}")
        if topic in ARGPARSE_COMMANDS:
            return None, [topic, "--help"]
        return (PLAN_PAGE if topic == "plan" else page()), []
    if (args[:1] and args[0] in ARGPARSE_COMMANDS) or not {"-h", "--help"} & set(args):
        return None, args
    # A help flag wins over everything else, so a bad override cannot hide the page.
    return (PLAN_PAGE if args[:1] == ["plan"] else page()), []


def show(text: str) -> None:
    """Print ``text``; a reader that stops early (``trainrepro --help | head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again at exit, on flushing stdout: point it elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def page() -> str:
    """The tool's help page."""
    top = _top_config()
    sections = [
        "usage: trainrepro [COMMAND] [GROUP=OPTION | KEY=VALUE ...]\n"
        "       (`python -m trainrepro` is the same; `trainrepro <command> --help` for one "
        "command)",
        "commands:\n" + _table(COMMANDS.items()),
        "config groups (GROUP=OPTION picks conf/<group>/<option>.yaml; * marks the default):\n"
        + _groups_section(top),
        "most used keys (KEY=VALUE; the defaults of conf/config.yaml):\n"
        + _table((f"{k}={_yaml_value(top[k])}", text) for k, text in KEYS.items()),
        "data:\n" + _data_section(top),
        "more:\n"
        + _table(
            [
                ("--cfg job", "print the composed config for the overrides given, run nothing"),
                ("--hydra-help", "Hydra's own flags (--cfg, --resolve, --info, -m/--multirun)"),
                ("README.md", "recipes, every group's keys, the papers reproduced"),
            ]
        ),
    ]
    return "\n\n".join(sections)


def _top_config() -> dict[str, Any]:
    # Read as plain YAML: composing would resolve ${oc.env:...} and cost a Hydra start-up.
    return yaml.safe_load((CONF_DIR / f"{CONFIG_NAME}.yaml").read_text())


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def _table(rows: Any, indent: int = 2) -> str:
    """Two columns; a row ``(name, text, hang)`` wraps its text ``hang`` columns further in."""
    rows = [(*row, 0)[:3] for row in rows]
    width = max(len(name) for name, _, _ in rows) + 2
    return "\n".join(
        textwrap.fill(
            text,
            WIDTH,
            initial_indent=" " * indent + name.ljust(width),
            subsequent_indent=" " * (indent + width + hang),
            break_on_hyphens=False,
        )
        for name, text, hang in rows
    )


def _listed(name: str, syntax: str, items: list[str]) -> tuple[str, str, int]:
    """A table row ``syntax: a, b, c`` whose wrapped lines line up under ``a``."""
    prefix = f"{syntax}: " if syntax else ""
    return name, prefix + ", ".join(items), len(prefix) if len(prefix) <= 24 else 2


def _visible(group: str) -> list[str]:
    """The options a user picks: ``_base``-style files are shared parts of presets, not options
    (config.options lists them too; filtered here so config.py keeps them for Hydra's checks)."""
    return [o for o in options(group) if not o.rsplit("/", 1)[-1].startswith("_")]


def _groups_section(top: dict[str, Any]) -> str:
    chosen = {
        k: v for item in top.get("defaults", []) if isinstance(item, dict) for k, v in item.items()
    }
    in_defaults = [g for g in chosen if g in groups()]
    rows: list[tuple[str, str, int]] = []
    for group in in_defaults + [g for g in groups() if g not in chosen]:
        names = _visible(group)
        if group in in_defaults:
            rows.append(_listed(group, "", [f"{o}*" if o == chosen[group] else o for o in names]))
        elif group == "hydra":  # Hydra's own groups: hydra/launcher=slurm
            for sub in sorted({o.split("/")[0] for o in names}):
                subs = [o.split("/", 1)[1] for o in names if o.startswith(sub + "/")]
                rows.append(_listed(group, f"hydra/{sub}=NAME", subs))
        elif any("/" in o for o in names):  # experiment presets, one line per paper
            rows.append((group, f"+{group}=FOLDER/NAME, e.g. +{group}={names[0]}", 0))
            for folder in sorted({o.split("/")[0] for o in names}):
                subs = [o.split("/", 1)[1] for o in names if o.startswith(folder + "/")]
                rows.append(_listed("", f"{folder}/", subs))
        else:  # not in the defaults list: added with +group=NAME
            rows.append(_listed(group, GROUP_SYNTAX.get(group, f"+{group}=NAME"), names))
    return _table(rows)


def _data_section(top: dict[str, Any]) -> str:
    dataset = next(
        (item["dataset"] for item in top.get("defaults", []) if isinstance(item, dict)
         and "dataset" in item),
        "cifar10",
    )  # fmt: skip
    node = yaml.safe_load((CONF_DIR / "dataset" / f"{dataset}.yaml").read_text())
    root = str(node.get("root"))
    env = re.fullmatch(r"\$\{oc\.env:(\w+),([^}]*)\}", root)
    if env is None:
        return _table([("dataset.root", f"default {root}")])
    var, fallback = env.groups()
    now = os.environ.get(var)
    state = f"{var}={now}" if now else f"{var} is not set here, so ./{fallback.strip()}"
    return _table(
        [
            (
                "dataset.root",
                f"the folder holding the datasets (cifar10/, mnist/raw/, ...); default "
                f"${var}, else ./{fallback.strip()} (now: {state})",
            ),
            ("", f"point at it: `export {var}=/path/to/data` or dataset.root=/path/to/data"),
            ("", "dataset=synthetic needs no data (generated shapes)"),
        ]
    )

"""Before any run starts: can each preset run here? One line per problem, in the builders' own
words, instead of every run failing in its .log: a dataset that is not where its config says,
and a run-level key this machine cannot honour (device=cuda without CUDA, precision=bf16 on a
CPU without bf16 units).

Only the cheap dataset case is checked (CIFAR-10/100: the folders the builder looks for, no
loading); other datasets are left to the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from trainrepro.errors import ConfigError
from trainrepro.reproduce.runner import RunSpec


def dataset_error(dataset: DictConfig) -> str | None:
    """The builder's error for a CIFAR dataset that is not on disk, else None (nothing read)."""
    from trainrepro.config import instantiate
    from trainrepro.data.builders import _CIFAR

    name = dataset.get("name")
    if name not in _CIFAR or dataset.get("download"):
        return None
    pickle_dir, folder_name = _CIFAR[name][:2]
    try:
        base = Path(str(dataset.root)).expanduser()
    except Exception as e:  # an unresolvable ${oc.env:...}: the runs would fail the same way
        return f"dataset.root: {e}"
    folder = base / folder_name
    if (base / pickle_dir).is_dir() or ((folder / "train").is_dir() and (folder / "test").is_dir()):
        return None
    try:  # not there: the builder fails at once, before reading anything, with its message
        instantiate("dataset", dataset)
    except ConfigError as e:
        return str(e)
    return None


def preflight_errors(specs: Sequence[RunSpec]) -> list[str]:
    """One message per distinct problem, composing the first run of each preset."""
    from trainrepro.build import check_top_level
    from trainrepro.cli import _compose

    seen: set[str] = set()
    messages: list[str] = []
    for _, overrides in specs:
        preset = overrides[0]  # +experiment=<paper>/<preset>
        if preset in seen:
            continue
        seen.add(preset)
        try:
            cfg = _compose(list(overrides))
        except ConfigError:
            continue  # a config error is the run's to report
        try:
            check_top_level(cfg)
            error = dataset_error(cfg.dataset)
        except ConfigError as e:
            error = str(e)
        if error and error not in messages:
            messages.append(error)
    return messages

"""Before any run starts: can each preset run here? One line per problem, in the builders' own
words, instead of every run failing in its .log: a dataset that is not where its config says,
a run-level key this machine cannot honour (device=cuda without CUDA, precision=bf16 on a
CPU without bf16 units), and any key that fails the trainer's checks before data is read.

Only the cheap dataset case is checked (CIFAR-10/100: the folders the builder looks for, no
loading); other datasets are left to the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from trainrepro.engine.runner import RunSpec
from trainrepro.errors import ConfigError


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


def preflight_errors(specs: Sequence[RunSpec], epochs: dict[Path, int] | None = None) -> list[str]:
    """One message per distinct problem. Every run's config is composed and given the checks
    that need no data (trainrepro.engine.build.check_config: a bad key of any one run stops
    them all before the first starts); each preset's dataset is looked for once. ``epochs``,
    when given, gets each run's total epochs (for the progress line; composed here anyway).

    Runs that differ only in their seed compose to the same config but for ``seed``, which
    every check here only needs to be an integer: each distinct set of the other overrides is
    composed and checked once (a paper's full profile repeats most of its settings per seed).
    """
    from trainrepro.config import Composer
    from trainrepro.engine.build import check_config

    compose = Composer()

    seen: set[str] = set()
    runs_of: dict[str, list[str]] = {}  # problem -> the run dirs that have it
    checked: dict[tuple[str, ...], str | DictConfig] = {}  # overrides but seed -> error or cfg
    for run_dir, overrides in specs:
        seeds = [o for o in overrides if o.startswith("seed=")]
        if any(not s.removeprefix("seed=").lstrip("-").isdigit() for s in seeds):
            runs_of.setdefault(f"seed={seeds[-1].removeprefix('seed=')}: must be an integer",
                               []).append(str(run_dir))  # fmt: skip
            continue
        key = tuple(o for o in overrides if not o.startswith("seed="))
        if key not in checked:
            try:
                cfg = compose(list(overrides))
                check_config(cfg)
                checked[key] = cfg
            except ConfigError as e:
                checked[key] = str(e)
        got = checked[key]
        if isinstance(got, str):
            runs_of.setdefault(got, []).append(str(run_dir))
            continue
        if epochs is not None:
            epochs[run_dir] = int(got.epochs)
        preset = overrides[0]  # +experiment=<paper>/<preset>
        if preset not in seen:
            seen.add(preset)
            error = dataset_error(got.dataset)
            if error:
                runs_of.setdefault(error, [])
    return [
        f"{runs[0]}: {error}" + (f" (and {len(runs) - 1} more runs)" if len(runs) > 1 else "")
        if runs
        else error
        for error, runs in runs_of.items()
    ]

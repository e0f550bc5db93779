"""Checks of a command line's folders, made before Hydra creates or writes anything.

Hydra would make the run folder (or a sweep's) itself and fail there with a traceback, and it
writes ``multirun.yaml`` into a named sweep's folder before any job could refuse to continue a
finished run of another config. Here the folders are resolved as Hydra resolves them, and each
job of a sweep is composed and compared with the run in its folder, so a refusal is one line
and leaves every file as it was.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from trainrepro.config import CONF_DIR, CONFIG_NAME, Composer
from trainrepro.engine.checkpoint import check_same_config, run_state
from trainrepro.errors import ConfigError

MULTIRUN_FLAGS = {"-m", "--multirun"}
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
DEFAULT_SUBDIR = "${hydra.job.num}"


def check_launch(args: list[str]) -> None:
    """Raise ConfigError when the run folder (for ``-m``, the sweep folder) of the command line
    ``args`` cannot be made, or a job of the sweep would continue a run of another config."""
    flags = {a for a in args if a.startswith("-")}
    if flags - MULTIRUN_FLAGS:
        return  # --cfg/--info/--help make no folder; --config-dir composes from elsewhere
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    with _hydra() as loader:
        try:
            master = loader.load_configuration(CONFIG_NAME, overrides, RunMode.MULTIRUN)
            HydraConfig.instance().set_config(master)
            multirun = bool(flags) or master.hydra.mode == RunMode.MULTIRUN
            key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            folder = str(OmegaConf.select(master, key))
        except Exception:  # Hydra reports its own failure, in its own words
            return
        check_creatable(key, folder, "sweep" if multirun else "run")
        if multirun and master.hydra.sweeper.get("_target_") == BASIC_SWEEPER:
            _check_jobs(loader, master)


def check_creatable(key: str, folder: str, what: str) -> None:
    """Raise ConfigError unless ``folder`` is a writable folder or can be made. Where it must be
    made, a folder is made and removed at once in its nearest existing parent: permission bits
    tell nothing for root, nor anything for /proc."""
    path = Path(folder).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = f"{os.strerror(errno.ENOTDIR)}: {existing}"
    elif existing == path:
        if not os.access(path, os.W_OK | os.X_OK):
            reason = f"{os.strerror(errno.EACCES)}: {path}"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".trainrepro-probe-"))
        except OSError as e:
            reason = f"{e.strerror}: {existing}"
    if reason:
        raise ConfigError(key, folder, f"cannot create the {what} folder ({reason})")


def _check_jobs(loader: ConfigLoaderImpl, master: DictConfig) -> None:
    """Compare each job that finds a run in its folder with that run's config.yaml, as the job
    itself would (cli._job for a finished run, train's resume check for an interrupted one)."""
    composer = Composer()
    for overrides, folder in _jobs(loader, master):
        state = run_state(folder)
        saved = folder / "config.yaml"
        if state == "fresh" or not saved.is_file():
            continue  # a job without a checkpoint starts over
        try:
            config = OmegaConf.to_container(composer(overrides), resolve=True)
        except OmegaConfBaseException:
            continue  # an interpolation only Hydra can resolve: the job checks itself
        which = "finished" if state == "done" else "interrupted"
        check_same_config(yaml.safe_load(saved.read_text()), config, f"{folder}'s {which} run")


def _jobs(loader: ConfigLoaderImpl, master: DictConfig) -> Iterator[tuple[list[str], Path]]:
    """Each job of the sweep, in Hydra's order: its overrides and its folder, as Hydra's basic
    sweeper and launcher make them (hydra.sweep.dir / hydra.sweep.subdir, job.num from 0)."""
    params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(
        [*params, *master.hydra.overrides.task]
    )
    sweep_dir = Path(str(master.hydra.sweep.dir))
    subdir: Any = OmegaConf.to_container(master.hydra.sweep, resolve=False)["subdir"]
    for num, overrides in enumerate(BasicSweeper.split_arguments(parsed, None)[0]):
        if subdir == DEFAULT_SUBDIR:
            yield overrides, (sweep_dir / str(num)).absolute()
            continue
        cfg = loader.load_sweep_config(master, list(overrides))  # as the launcher does
        with open_dict(cfg):
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        HydraConfig.instance().set_config(cfg)
        yield overrides, Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)).absolute()


@contextmanager
def _hydra() -> Iterator[ConfigLoaderImpl]:
    """Hydra's config loader over conf/, with its resolvers (``now``, ``hydra``); Hydra's global
    state is left as it was found, for the Hydra entry point that follows."""
    GlobalHydra.instance().clear()
    saved = HydraConfig.instance().cfg
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            setup_globals()
            yield GlobalHydra.instance().config_loader()
    finally:
        HydraConfig.instance().cfg = saved
        GlobalHydra.instance().clear()

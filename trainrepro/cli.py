"""The command line: ``python -m trainrepro [overrides]`` and the ``trainrepro`` script.

Hydra composes the config and runs (or sweeps) jobs. Before Hydra sees the arguments, each
override is checked so a mistake gets one line naming the key and value, not a traceback,
and no run directory is created.
"""

from __future__ import annotations

import importlib
import shutil
import signal
import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainrepro.config import CONF_DIR, CONFIG_NAME, check_overrides, flags_first
from trainrepro.errors import ConfigError
from trainrepro.help import SUBCOMMANDS
from trainrepro.help import route as help_route
from trainrepro.help import show as show_help


def fail(error: ConfigError) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def _job(cfg: DictConfig) -> float | None:
    from trainrepro.engine.checkpoint import check_same_config, run_state
    from trainrepro.engine.distributed import is_main
    from trainrepro.engine.lifecycle import resume_command
    from trainrepro.engine.preemption import Preempted
    from trainrepro.engine.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # A sweep is restartable: finished jobs are kept, interrupted ones resumed.
        state = run_state(run_dir)
        if state == "done":
            # A finished job of another config would be skipped silently: name the difference.
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            try:
                check_same_config(
                    saved, OmegaConf.to_container(cfg, resolve=True), f"{run_dir}'s finished run"
                )
            except ConfigError as e:
                fail(e)
            print(f"{run_dir}: finished earlier, skipped")
            return _objective(run_dir)
        cfg.resume = state == "resume"
        if state == "fresh":  # a job killed before its first checkpoint starts over
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
    run_dir = _shared_run_dir(run_dir)
    had_run = any((run_dir / name).exists() for name in ("metrics.csv", "checkpoint.pt"))
    try:
        summary = train(cfg, run_dir, command=list(hydra_cfg.overrides.task))
    except ConfigError as e:
        if not had_run and is_main():  # Hydra made the directory; leave nothing half-written.
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(e)
    except Preempted as e:
        print(f"{e}; the last complete checkpoint in {run_dir} is kept", file=sys.stderr)
        if (run_dir / "checkpoint.pt").exists():
            command = resume_command(run_dir, list(hydra_cfg.overrides.task))
            print(f"continue with:\n  {command}", file=sys.stderr)
        sys.exit(e.exit_code)
    if summary["signal"]:  # stopped by SIGTERM/SIGINT: exit as a shell reports that signal
        sys.exit(128 + signal.Signals[summary["signal"]].value)
    return _objective(run_dir)


def _objective(run_dir: Path) -> float | None:
    """The run's result for a sweeper that reads it (Optuna, ``hparams_search``), said in one
    line; None otherwise, as before (trainrepro/engine/objective.py)."""
    from trainrepro.engine.launch import BASIC_SWEEPER
    from trainrepro.engine.objective import objective

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.sweeper.get("_target_") == BASIC_SWEEPER:
        return None
    value, text = objective(run_dir)
    print(f"returned to the sweeper: {text}", flush=True)
    return value


def _shared_run_dir(run_dir: Path) -> Path:
    """Under torchrun every rank composes its own Hydra run dir (``${now:}`` may differ by a
    second): all ranks take rank 0's, and the others drop the empty one Hydra made for them."""
    from trainrepro.engine import distributed

    world = distributed.init_from_env()
    if not world.active:
        return run_dir
    shared = [str(run_dir)]
    distributed.dist.broadcast_object_list(shared, src=0)
    if shared[0] != str(run_dir) and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
    return Path(shared[0])


def main() -> None:
    if not CONF_DIR.is_dir():
        fail(
            ConfigError("conf", CONF_DIR, "config folder missing; install with `pip install -e .`")
        )
    args = sys.argv[1:]
    try:  # `--help`, `help [command]`, `plan --help`: trainrepro/help.py, before any composing
        page, args = help_route(args)
    except ConfigError as e:
        fail(e)
    if page is not None:
        show_help(page)
        return
    if args[:1] == ["run"]:  # `trainrepro run ...` is `trainrepro ...`, as the help page says
        args = args[1:]
        sys.argv = [sys.argv[0], *args]
    if args[:1] and args[0] in SUBCOMMANDS:  # each takes its own arguments: see SUBCOMMANDS
        module_name, function = SUBCOMMANDS[args[0]].split(":")
        module = importlib.import_module(module_name)
        sys.exit(getattr(module, function)(args[1:]))
    if args[:1] == ["plan"]:  # `trainrepro plan ...` is `trainrepro ... +plan=true`
        args = [*args[1:], "+plan=true"]
        sys.argv = [sys.argv[0], *args]
    try:
        cfg = check_overrides(args)
        plan = cfg.get("plan", False)  # a true/false, as check_overrides checked
        if plan:
            if {"-m", "--multirun"} & set(args):
                raise ConfigError("plan", plan, "previews one run; drop -m/--multirun")
            from trainrepro.engine.plan import print_plan

            print_plan(cfg)
            return
        from trainrepro.engine.launch import check_launch

        check_launch(args)  # the run or sweep folder, and every job of a sweep, before Hydra
    except ConfigError as e:
        fail(e)
    sys.argv = [sys.argv[0], *flags_first(args)]  # `a=1 --config-dir D b=2` too
    from trainrepro.engine.optuna_sweep import patch_optuna_sweeper

    patch_optuna_sweeper()  # hparams_search: restartable studies (nothing without the plugin)
    _job()


if __name__ == "__main__":
    main()

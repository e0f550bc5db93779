"""The command line: ``python -m trainrepro [overrides]`` and the ``trainrepro`` script.

Hydra composes the config and runs (or sweeps) jobs. Before Hydra sees the arguments, each
override is checked so a mistake gets one line naming the key and value, not a traceback,
and no run directory is created.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainrepro.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_NAME = "config"


def _groups() -> list[str]:
    return sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir())


def _options(group: str) -> list[str]:
    root = CONF_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def check_overrides(args: list[str]) -> DictConfig:
    """Raise ConfigError for an unknown group option or key among command-line overrides.

    Returns the config composed with the first value of every swept key.
    """
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError("override", " ".join(overrides), _first_line(e)) from None
    groups = _groups()
    first_values = []
    for o in parsed:
        key = o.key_or_group
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        else:
            values = [o.get_value_element_as_str()]
        if key in groups and not o.is_delete():
            for value in _selected_options(o):
                if not (CONF_DIR / key / f"{value}.yaml").is_file():
                    valid = ", ".join(_options(key))
                    raise ConfigError(key, value, f"unknown option; valid: {valid}")
        if not key.startswith("hydra"):
            first_values.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
    return _compose(first_values)


def _selected_options(o: Override) -> list[str]:
    """The group options an override names; a list value (``+callbacks=[a,b]``) names several."""
    values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    return [str(v) for value in values for v in (value if isinstance(value, list) else [value])]


def _compose(overrides: list[str]) -> DictConfig:
    """Compose one config, so an unknown key fails here with Hydra's reason on one line."""
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        cause = f" ({_first_line(e.__cause__)})" if e.__cause__ else ""
        raise ConfigError("override", " ".join(overrides), _first_line(e) + cause) from None
    finally:
        GlobalHydra.instance().clear()


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


def fail(error: ConfigError) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def _job(cfg: DictConfig) -> None:
    from trainrepro.checkpoint import check_same_config, run_state
    from trainrepro.distributed import is_main
    from trainrepro.preemption import Preempted
    from trainrepro.train import train

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
            return
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
        sys.exit(e.exit_code)
    if summary["signal"]:  # stopped by SIGTERM/SIGINT: exit as a shell reports that signal
        sys.exit(128 + signal.Signals[summary["signal"]].value)


def _shared_run_dir(run_dir: Path) -> Path:
    """Under torchrun every rank composes its own Hydra run dir (``${now:}`` may differ by a
    second): all ranks take rank 0's, and the others drop the empty one Hydra made for them."""
    from trainrepro import distributed

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
    if args[:1] == ["reproduce"]:  # `trainrepro reproduce <paper> ...`: trainrepro/reproduce/
        from trainrepro.reproduce.cli import main as reproduce_main

        sys.exit(reproduce_main(args[1:]))
    if args[:1] == ["cv"]:  # `trainrepro cv <overrides> --grid k=a,b --folds 4`: trainrepro/cv.py
        from trainrepro.cv import main as cv_main

        sys.exit(cv_main(args[1:]))
    if args[:1] == ["bn-alpha"]:  # `trainrepro bn-alpha <run dir>`: trainrepro/bn_alpha.py
        from trainrepro.bn_alpha import main as bn_alpha_main

        sys.exit(bn_alpha_main(args[1:]))
    if args[:1] == ["plan"]:  # `trainrepro plan ...` is `trainrepro ... +plan=true`
        args = [*args[1:], "+plan=true"]
        sys.argv = [sys.argv[0], *args]
    try:
        cfg = check_overrides(args)
        plan = cfg.get("plan", False)
        if not isinstance(plan, bool):
            raise ConfigError("plan", plan, "must be true or false")
        if plan:
            if {"-m", "--multirun"} & set(args):
                raise ConfigError("plan", plan, "previews one run; drop -m/--multirun")
            from trainrepro.plan import print_plan

            print_plan(cfg)
            return
    except ConfigError as e:
        fail(e)
    _job()


if __name__ == "__main__":
    main()

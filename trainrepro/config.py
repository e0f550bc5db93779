"""Config composition and the flat builders that configs name.

Composition: ``CONF_DIR`` holds the Hydra groups; :func:`check_overrides` checks command-line
overrides (unknown group option or key -> one ConfigError naming it) and :func:`compose`
builds a config as ``python -m trainrepro`` would, for the CLI, preflight, cv and benchmarks.

Builders: every group option is a YAML file with ``_target_`` (a dotted path to a builder function),
an optional ``name`` (the option's label, kept for plots and tables) and the builder's keyword
arguments. The builder receives plain Python values, never a ``DictConfig``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainrepro.errors import ConfigError

META_KEYS = ("_target_", "name")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # next to the package: editable install
CONFIG_NAME = "config"


def groups() -> list[str]:
    """The config groups (folders of conf/)."""
    return sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir())


def options(group: str) -> list[str]:
    """The options of ``group``, as a command line names them (``gn/bn`` for nested ones)."""
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
        raise ConfigError("override", " ".join(overrides), first_line(e)) from None
    group_names = groups()
    first_values = []
    for o in parsed:
        key = o.key_or_group
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        else:
            values = [o.get_value_element_as_str()]
        if key in group_names and not o.is_delete():
            for value in _selected_options(o):
                if not (CONF_DIR / key / f"{value}.yaml").is_file():
                    valid = ", ".join(options(key))
                    raise ConfigError(key, value, f"unknown option; valid: {valid}")
        if not key.startswith("hydra"):
            first_values.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
    return compose(first_values)


def _selected_options(o: Override) -> list[str]:
    """The group options an override names; a list value (``+callbacks=[a,b]``) names several."""
    values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    return [str(v) for value in values for v in (value if isinstance(value, list) else [value])]


def compose(overrides: list[str]) -> DictConfig:
    """Compose one config, so an unknown key fails here with Hydra's reason on one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        cause = f" ({first_line(e.__cause__)})" if e.__cause__ else ""
        raise ConfigError("override", " ".join(overrides), first_line(e) + cause) from None
    finally:
        GlobalHydra.instance().clear()


class Composer:
    """:func:`compose` for many override lists that share their group choices (a paper's runs:
    the same preset and profile, other learning rates, folds and seeds).

    Each distinct set of group overrides (``+experiment=...``, ``profile=...``) is composed by
    Hydra once; the value overrides (``optimizer.lr=0.01``) are then applied to a copy by
    Hydra's own routine for them, the step its compose ends with, so the result is the same
    config (tests/test_compose.py compares the two on every run of every paper). Any error is
    re-raised from a plain :func:`compose`, so its message is the same too.
    """

    def __init__(self) -> None:
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._group_names = set(groups())

    def _is_group(self, o: Override) -> bool:
        key = o.key_or_group
        return o.package is not None or key.split("/")[0] in self._group_names

    def __call__(self, overrides: list[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        try:
            parsed = OverridesParser.create().parse_overrides(list(overrides))
        except HydraException:
            return compose(list(overrides))
        if any(o.key_or_group.startswith("hydra") for o in parsed):
            return compose(list(overrides))
        chosen = tuple(o.input_line for o in parsed if self._is_group(o))
        if chosen not in self._bases:
            self._bases[chosen] = compose(list(chosen))
        cfg = copy.deepcopy(self._bases[chosen])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o in parsed if not self._is_group(o)], cfg
            )
        except (HydraException, OmegaConfBaseException):
            return compose(list(overrides))  # the error, in compose's own words
        return cfg


def first_line(e: BaseException) -> str:
    """The first two non-empty lines of an exception's message, joined: one line for a user."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


def resolve_target(path: str, key: str) -> Callable[..., Any]:
    """Import ``package.module.function`` named by config key ``key``."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(key, path, "cannot import this builder function") from None
    if not callable(fn):
        raise ConfigError(key, path, "is not callable")
    return fn


def builder_kwargs(node: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The node's keys that are builder arguments, as plain Python values."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in dict(node).items() if k not in META_KEYS}


def check_kwargs(
    fn: Callable[..., Any], group: str, kwargs: Mapping[str, Any], runtime: Iterable[str] = ()
) -> None:
    """Raise one ConfigError that lists every config key ``fn`` does not accept.

    ``runtime`` names the arguments the run supplies; they are not offered as valid keys.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        n
        for n, p in params.items()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    } - set(runtime)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        keys = ",".join(f"{group}.{k}" for k in unknown)
        valid = ", ".join(sorted(accepted))
        raise ConfigError(keys, [kwargs[k] for k in unknown], f"unknown key(s); valid: {valid}")


def build_named(
    registry: Mapping[str, Callable[..., Any]], group: str, name: str, /, *args: Any, **kwargs: Any
) -> Any:
    """``registry[name](*args, **kwargs)`` for Python callers (``create_model``, ``create_norm``,
    ...; the CLI goes through the YAML): an unknown name or key is one ConfigError listing the
    valid ones, as a config would get."""
    if name not in registry:
        raise ConfigError(group, name, f"unknown; valid: {', '.join(sorted(registry))}")
    builder = registry[name]
    check_kwargs(builder, group, kwargs)
    return builder(*args, **kwargs)


def instantiate(
    group: str, node: DictConfig | Mapping[str, Any], *args: Any, **runtime: Any
) -> Any:
    """Call the builder named by ``node._target_`` with the node's keys plus ``runtime``.

    ``runtime`` holds values the run supplies (number of classes, the model, the base
    learning rate); a config key may not shadow one of them.
    """
    target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else None
    if not target:
        raise ConfigError(f"{group}._target_", None, "missing: each option must name its builder")
    fn = resolve_target(target, f"{group}._target_")
    kwargs = builder_kwargs(node)
    clash = sorted(set(kwargs) & set(runtime))
    if clash:
        raise ConfigError(
            f"{group}.{clash[0]}", kwargs[clash[0]], "is set by the run, not the config"
        )
    check_kwargs(fn, group, kwargs, runtime=runtime)
    return fn(*args, **kwargs, **runtime)

"""Turn a config group node into a call of the flat builder function it names.

Every group option is a YAML file with ``_target_`` (a dotted path to a builder function),
an optional ``name`` (the option's label, kept for plots and tables) and the builder's keyword
arguments. The builder receives plain Python values, never a ``DictConfig``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainrepro.errors import ConfigError

META_KEYS = ("_target_", "name")


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

"""Config composition and the flat builders that configs name.

Composition: ``CONF_DIR`` holds the Hydra groups, and a command line may add folders of the
user's own (``--config-dir DIR``, ``hydra.searchpath=[file://DIR]``), searched after it as
Hydra does. :func:`check_overrides` checks a command line (an unknown group option or key, a
key added with ``+`` that the config does not define, a switch that is not true/false -> one
ConfigError naming that override) and :func:`compose` builds a config as ``python -m
trainrepro`` would, for the CLI, preflight, cv and benchmarks.

Builders: every group option is a YAML file with ``_target_`` (a dotted path to a builder function),
an optional ``name`` (the option's label, kept for plots and tables) and the builder's keyword
arguments. The builder receives plain Python values, never a ``DictConfig``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainrepro.errors import ConfigError, check_bool

META_KEYS = ("_target_", "name")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # next to the package: editable install
CONFIG_NAME = "config"
# Top-level switches that config.yaml leaves out and a command line adds: `+plan=true` (cli.py).
OPTIONAL_KEYS = ("plan",)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException)
SEARCHPATH = "hydra.searchpath"


def groups(dirs: Sequence[Path] = ()) -> list[str]:
    """The config groups: the folders of conf/ and of the user's config folders ``dirs``."""
    return sorted({d.name for root in (CONF_DIR, *dirs) for d in root.iterdir() if d.is_dir()})


def options(group: str, dirs: Sequence[Path] = ()) -> list[str]:
    """The options of ``group``, as a command line names them (``gn/bn`` for nested ones)."""
    roots = [root / group for root in (CONF_DIR, *dirs) if (root / group).is_dir()]
    return sorted({str(p.relative_to(r).with_suffix("")) for r in roots for p in r.rglob("*.yaml")})


@functools.cache
def _top_config() -> dict[str, Any]:
    """conf/config.yaml as written. Hydra searches conf/ first, so a user folder's config.yaml
    never replaces it."""
    return yaml.safe_load((CONF_DIR / f"{CONFIG_NAME}.yaml").read_text())


def bool_keys() -> list[str]:
    """The top-level switches: config.yaml's true/false keys, and OPTIONAL_KEYS."""
    return sorted({k for k, v in _top_config().items() if isinstance(v, bool)} | {*OPTIONAL_KEYS})


def check_booleans(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for a top-level switch that is not a YAML true/false: Hydra passes
    ``resume=maybe`` on as a string, which Python would count as true. The one check of them,
    for the CLI (before anything runs), compose() and the trainer."""
    for key in bool_keys():
        if key in cfg:
            check_bool(key, cfg[key])


def check_overrides(args: Sequence[str]) -> DictConfig:
    """Check a command line as Hydra will read it (its flags and overrides): raise ConfigError
    for a missing user config folder, an unknown group option or key, a key added with ``+``
    that the config does not define, or a switch that is not true/false (every value of a
    sweep).

    Returns the config composed with the first value of every swept key.
    """
    config_dir, lines = _split_args(args)
    parsed = _parse(lines)
    dirs = _user_dirs(config_dir, parsed)
    group_names, switches = groups(dirs), bool_keys()
    first_values = []
    for o in parsed:
        key = o.key_or_group
        if key in group_names and not o.is_delete():
            for value in _selected_options(o):
                if not any((root / key / f"{value}.yaml").is_file() for root in (CONF_DIR, *dirs)):
                    valid = ", ".join(options(key, dirs))
                    raise ConfigError(key, value, f"unknown option; valid: {valid}")
        if key in switches and not o.is_delete():
            for value in _values(o):
                check_bool(key, value)
        if not key.startswith("hydra"):
            swept = list(o.sweep_string_iterator()) if o.is_sweep_override() else []
            first_values.append(f"{o.get_key_element()}={swept[0]}" if swept else o.input_line)
    return compose(first_values, dirs)


def _split_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the ``--config-dir`` value, the overrides) as Hydra's own argument parser reads them."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False  # `--config-dir` without a folder: one line, not a usage page
    try:
        ns, rest = parser.parse_known_args(list(args))
    except argparse.ArgumentError as e:
        raise ConfigError(e.argument_name or "argument", "", e.message) from None
    # argparse leaves overrides that follow a flag (`a=1 -m b=2`) over: check them too.
    return ns.config_dir, [*ns.overrides, *(a for a in rest if not a.startswith("-"))]


def flags_first(args: Sequence[str]) -> list[str]:
    """``args`` with Hydra's flags (and their values) before the overrides, each in its order:
    Hydra's parser takes the overrides in one run only, so ``a=1 --config-dir D b=2`` (or
    ``a=1 -m b=2``) would end on its usage page."""
    from hydra._internal.utils import get_args_parser

    actions = get_args_parser()._option_string_actions
    flags, overrides = [], []
    i = 0
    while i < len(args):
        arg, i = args[i], i + 1
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        action = actions.get(arg)  # None for `--config-dir=D`: its value is in it
        if action is not None and i < len(args):
            if action.nargs is None or (action.nargs == "?" and args[i] in action.choices):
                flags.append(args[i])
                i += 1
    return [*flags, *overrides]


def _parse(lines: Sequence[str]) -> list[Override]:
    """Parse each override alone, so a syntax error names that override and no other."""
    parser = OverridesParser.create()
    parsed = []
    for line in lines:
        try:
            parsed.extend(parser.parse_overrides([line]))
        except HydraException as e:
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError("override", line, "expected KEY=VALUE") from None
            detail = [s for s in _lines(e) if not s.startswith(("Error parsing", "See https"))]
            raise ConfigError(key, value, f"cannot parse: {' '.join(detail[:1])}") from None
    return parsed


def _values(o: Override) -> list[Any]:
    """The values an override sets, typed as Hydra parses them (``true`` -> True)."""
    return list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]


def _selected_options(o: Override) -> list[str]:
    """The group options an override names; a list value (``+callbacks=[a,b]``) names several."""
    return [str(v) for value in _values(o) for v in (value if isinstance(value, list) else [value])]


def _user_dirs(config_dir: str | None, parsed: Sequence[Override]) -> list[Path]:
    """The user's config folders, in Hydra's search order: ``--config-dir``, then the entries
    of ``hydra.searchpath`` (Hydra puts both after conf/)."""
    found = []
    if config_dir is not None:
        found.append(_folder("--config-dir", config_dir, config_dir))
    for o in parsed:
        if o.get_key_element() != SEARCHPATH:  # the test Hydra makes
            continue
        entries = o.value()
        if not isinstance(entries, list):
            raise ConfigError(SEARCHPATH, entries, "must be a list, e.g. [file://DIR]")
        for entry in map(str, entries):
            scheme, sep, path = entry.partition("://")
            if sep and scheme != "file":
                raise ConfigError(
                    SEARCHPATH, entry, "only file://DIR is supported here (or --config-dir DIR)"
                )
            found.append(_folder(SEARCHPATH, entry, path if sep else entry))
    return found


def _folder(key: str, value: str, path: str) -> Path:
    """``path`` made absolute, as Hydra makes it, or ConfigError when it is not a folder."""
    if not Path(path).is_dir():
        raise ConfigError(key, value, "no such folder")
    return Path(path).resolve()


def _check_additions(parsed: Sequence[Override], group_names: Iterable[str]) -> None:
    """Refuse ``+key=value`` for a top-level key the config does not define: Hydra would add
    it silently (``+epoch=5`` trains the default epochs and stores ``epoch: 5``). A group
    (``+experiment=``, ``+callbacks=``), a key of config.yaml (``+callbacks.x._target_=``:
    a nested key, checked by its builder) and OPTIONAL_KEYS may be added."""
    top = set(_top_config()) - {"defaults"}
    addable = set(group_names) | top | set(OPTIONAL_KEYS)
    for o in parsed:
        name = re.split(r"[./]", o.key_or_group)[0]
        if not (o.is_add() or o.is_force_add()) or name in addable:
            continue
        # "optional hparams_search": a group in the defaults is chosen there, not added
        chosen = {
            next(iter(d)).split()[-1] for d in _top_config()["defaults"] if isinstance(d, dict)
        }
        extra = sorted((set(group_names) - chosen - {"hydra"}) | set(OPTIONAL_KEYS))
        key, _, value = o.input_line.partition("=")
        close = difflib.get_close_matches(name, sorted(addable - {"hydra"}), n=1)
        # config.yaml's keys and the groups its defaults choose are set, not added
        plus = "+" if close and close[0] not in top | chosen else ""
        hint = f"; did you mean {plus}{close[0]}={value}?" if close else ""
        raise ConfigError(key, value, f"unknown key{hint} (+ adds only {', '.join(extra)})")


def compose(overrides: Sequence[str], dirs: Sequence[Path] = ()) -> DictConfig:
    """Compose one config, with the user's config folders ``dirs`` searched after conf/;
    a mistake is one ConfigError naming the override that caused it."""
    parsed = _parse(overrides)
    dirs = [*dirs, *_user_dirs(None, parsed)]
    parsed = [o for o in parsed if o.get_key_element() != SEARCHPATH]  # now in dirs
    _check_additions(parsed, groups(dirs))
    try:
        cfg = _hydra_compose([o.input_line for o in parsed], dirs)
    except COMPOSE_ERRORS as e:
        raise _diagnose(parsed, dirs, e) from None
    check_booleans(cfg)
    return cfg


def _hydra_compose(lines: list[str], dirs: Sequence[Path]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if dirs:  # Hydra appends hydra.searchpath after conf/, where it also puts --config-dir
        quoted = ",".join("'file://" + str(d).replace("'", "\\'") + "'" for d in dirs)
        lines = [*lines, f"{SEARCHPATH}=[{quoted}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=CONFIG_NAME, overrides=lines)
    finally:
        GlobalHydra.instance().clear()


def _diagnose(parsed: list[Override], dirs: Sequence[Path], error: Exception) -> ConfigError:
    """The ConfigError of a compose that failed, naming one override: as Hydra does, the group
    choices are composed first, then the value overrides applied in order, one at a time."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    group_names = set(groups(dirs))
    chosen = [o for o in parsed if _is_group(o, group_names) or o.is_hydra_override()]
    try:
        cfg = _hydra_compose([o.input_line for o in chosen], dirs)
    except COMPOSE_ERRORS as e:
        text = f"{e} {e.__cause__ or ''}"
        named = [o for o in chosen if re.search(f"'{re.escape(o.key_or_group)}['/=.]", text)]
        culprits = named or (chosen if len(chosen) == 1 else [])
        if culprits:
            return _error(culprits[0], _reason(e))
        return ConfigError("override", " ".join(o.input_line for o in chosen), _reason(e))
    for o in parsed:
        if any(o is c for c in chosen):
            continue
        before = OmegaConf.to_container(cfg, resolve=False)  # a failed override may leave a trace
        try:
            ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
        except COMPOSE_ERRORS as e:
            return _unknown_key(before, o) or _error(o, _reason(e))
    return ConfigError("override", " ".join(o.input_line for o in parsed), _reason(error))


def _is_group(o: Override, group_names: set[str]) -> bool:
    return o.package is not None or o.key_or_group.split("/")[0] in group_names


def _unknown_key(node: Any, o: Override) -> ConfigError | None:
    """For ``key=value`` of a key the config (``node``, as plain containers) lacks: the error
    with the closest keys there."""
    if o.is_add() or o.is_force_add() or o.is_delete():
        return None
    path = ""
    for part in o.key_or_group.split("."):
        if not isinstance(node, dict):
            return _error(o, f"unknown key: {path.rstrip('.')} holds a value, not keys")
        if part not in node:
            keys = sorted(map(str, node))
            close = difflib.get_close_matches(part, keys, n=3)
            value = o.input_line.partition("=")[2]
            if close:
                guesses = " or ".join(f"{path}{c}={value}" for c in close)
                return _error(o, f"unknown key; did you mean {guesses}?")
            if not keys:
                return _error(o, f"unknown key: {path.rstrip('.')} is empty")
            return _error(o, f"unknown key; valid: {', '.join(keys)}")
        node, path = node[part], f"{path}{part}."
    return None


def _error(o: Override, reason: str) -> ConfigError:
    key, _, value = o.input_line.partition("=")
    return ConfigError(key, value, reason)


def _reason(e: BaseException) -> str:
    return first_line(e) + (f" ({first_line(e.__cause__)})" if e.__cause__ else "")


class Composer:
    """:func:`compose` for many override lists that share their group choices (a paper's runs:
    the same preset and profile, other learning rates, folds and seeds).

    Each distinct set of group overrides (``+experiment=...``, ``profile=...``) is composed by
    Hydra once; the value overrides (``optimizer.lr=0.01``) are then applied to a copy by
    Hydra's own routine for them, the step its compose ends with, so the result is the same
    config (tests/test_compose.py compares the two on every run of every paper). Any error is
    re-raised from a plain :func:`compose`, so its message is the same too. ``dirs``: the
    user's config folders, as for :func:`compose`.
    """

    def __init__(self, dirs: Sequence[Path] = ()) -> None:
        self._dirs = list(dirs)
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._group_names = set(groups(self._dirs))

    def __call__(self, overrides: list[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        try:
            parsed = OverridesParser.create().parse_overrides(list(overrides))
        except HydraException:
            return compose(list(overrides), self._dirs)
        if any(o.key_or_group.startswith("hydra") for o in parsed):
            return compose(list(overrides), self._dirs)
        _check_additions(parsed, self._group_names)
        chosen = tuple(o.input_line for o in parsed if _is_group(o, self._group_names))
        if chosen not in self._bases:
            self._bases[chosen] = compose(list(chosen), self._dirs)
        cfg = copy.deepcopy(self._bases[chosen])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o in parsed if not _is_group(o, self._group_names)], cfg
            )
        except COMPOSE_ERRORS:
            return compose(list(overrides), self._dirs)  # the error, in compose's own words
        check_booleans(cfg)
        return cfg


def first_line(e: BaseException) -> str:
    """The first two non-empty lines of an exception's message, joined: one line for a user."""
    lines = _lines(e)
    return " ".join(lines[:2]) if lines else type(e).__name__


def _lines(e: BaseException) -> list[str]:
    return [line.strip() for line in str(e).splitlines() if line.strip()]


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

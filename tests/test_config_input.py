"""What a new user types, checked before anything runs: keys added with ``+``, true/false
switches, one-line messages that name the one bad override, a checkpoint that carries code, and
config files of the user's own (``--config-dir DIR``, ``hydra.searchpath=[file://DIR]``)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from support import CONF_DIR, REPO, TINY_DATA, cli

from trainrepro.config import compose
from trainrepro.errors import ConfigError

RUN = (
    "model=lenet5",
    *TINY_DATA,
    "schedule=constant",
    "epochs=1",
    "batch_size=64",
    "eval_batch_size=256",
    "device=cpu",
    "progress=false",
)
ADDABLE = "(+ adds only callbacks, experiment, init, plan, profile)"
THIS = Path(__file__).name


def refused(tmp_path, *args: str) -> str:
    """Run the CLI expecting a refusal: exit 2, one ``error:`` line, no run folder. The line."""
    run_dir = tmp_path / "run"
    result = cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stdout
    assert not run_dir.exists()
    return lines[0]


# --- 1. `+key=` adds only what the config defines ------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("+epoch=5", f"error: +epoch=5: unknown key; did you mean epochs=5? {ADDABLE}"),
        ("++epoch=5", f"error: ++epoch=5: unknown key; did you mean epochs=5? {ADDABLE}"),
        ("+foo=1", f"error: +foo=1: unknown key {ADDABLE}"),
        (
            "+experimnt=gn/bn",
            f"error: +experimnt=gn/bn: unknown key; did you mean +experiment=gn/bn? {ADDABLE}",
        ),
        (  # an optional group of the defaults is chosen without +, and is not listed as added
            "+hparam_search=lr_wd",
            f"error: +hparam_search=lr_wd: unknown key; did you mean hparams_search=lr_wd? "
            f"{ADDABLE}",
        ),
    ],
)
def test_an_unknown_key_added_with_plus_is_refused(tmp_path, override, expected):
    assert refused(tmp_path, *RUN, override) == expected


def _plus_usages() -> list[str]:
    """Every complete ``+key=value`` of README.md, conf/ and tests/ (f-string ones left out;
    README's ``$ python -m trainrepro`` lines and their ``error:`` lines show mistakes)."""
    readme = (REPO / "README.md").read_text().splitlines()
    texts = ["\n".join(line for line in readme if not line.startswith(("$ ", "error: ")))]
    texts += [p.read_text() for p in CONF_DIR.rglob("*.yaml")]
    texts += [p.read_text() for p in (REPO / "tests").glob("*.py") if p.name != THIS]
    found = {m for t in texts for m in re.findall(r"(?<![\w+])\+[\w.@/]+=[^\s`'\",)]+", t)}
    return sorted(u for u in found if "{" not in u)


def test_no_documented_plus_usage_is_refused_as_an_unknown_key():
    """Some usages are deliberate mistakes of other kinds (``+callbacks=nope``); none may meet
    the refusal of a key that cannot be added."""
    usages = _plus_usages()
    names = {re.split(r"[=./]", u[1:])[0] for u in usages}
    assert {"experiment", "callbacks", "init", "plan"} <= names, usages
    for usage in usages:
        try:
            compose([usage])
        except ConfigError as e:
            assert "+ adds only" not in str(e), usage


# --- 2. top-level switches are YAML true/false ---------------------------------------------

TOP = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
SWITCHES = sorted({k for k, v in TOP.items() if isinstance(v, bool)} | {"plan"})


def test_the_switches_are_the_ones_named_in_the_issue():
    assert {"resume", "progress", "compile", "channels_last", "plan"} <= set(SWITCHES)


@pytest.mark.parametrize("key", SWITCHES)
def test_a_switch_that_is_not_true_or_false_is_refused(tmp_path, key):
    prefix = "+" if key not in TOP else ""
    line = refused(tmp_path, *RUN, f"{prefix}{key}=maybe")
    assert line == f"error: {key}=maybe: must be true or false"


def test_every_value_of_a_swept_switch_is_checked(tmp_path):
    line = refused(tmp_path, "-m", *RUN, "resume=true,yes", f"hydra.sweep.dir={tmp_path / 'run'}")
    assert line == "error: resume=yes: must be true or false"


def test_resume_yes_names_its_value_and_leaves_the_folder_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli(*RUN, "resume=yes", f"hydra.run.dir={empty}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: resume=yes: must be true or false"
    assert not any(empty.iterdir())


def test_resume_maybe_on_a_finished_run_changes_nothing(tmp_path):
    run_dir = tmp_path / "done"
    assert cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}
    result = cli(*RUN, "resume=maybe", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: resume=maybe: must be true or false"
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()} == before


# --- 3. a message names the one override at fault ------------------------------------------

TOP_KEYS = ", ".join(sorted(compose([])))


@pytest.mark.parametrize(
    "override, expected",
    [
        ("foo=1", f"error: foo=1: unknown key; valid: {TOP_KEYS}"),
        ("optimizer.foo=1", "error: optimizer.foo=1: unknown key; valid: _target_, dampening,"),
        ("epoch=5", "error: epoch=5: unknown key; did you mean epochs=5?"),
        ("optimizer.lrr=1", "error: optimizer.lrr=1: unknown key; did you mean optimizer.lr=1?"),
        ("seed.x=1", "error: seed.x=1: unknown key: seed holds a value, not keys"),
        ("optimizer.lr=[1", "error: optimizer.lr=[1: cannot parse: "),
    ],
)
def test_an_error_names_only_the_override_at_fault(tmp_path, override, expected):
    line = refused(tmp_path, *RUN, override)
    assert line.startswith(expected), line
    assert "model=lenet5" not in line and "schedule=constant" not in line


# --- 4. a checkpoint that carries code -----------------------------------------------------


class Payload:
    """Unpickled, it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_with_torch(obj, path):
    torch.save(obj, path)


def save_with_pickle(obj, path):  # protocol 4: torch warns before it refuses
    path.write_bytes(pickle.dumps(obj, protocol=4))


@pytest.mark.parametrize("save", [save_with_torch, save_with_pickle])
def test_a_checkpoint_carrying_code_is_refused_in_one_line_of_our_own(tmp_path, save):
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_dir.mkdir()
    save({"model": Payload(marker)}, run_dir / "checkpoint.pt")
    result = cli(*RUN, "resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and not marker.exists()
    assert result.stderr.startswith(f"error: checkpoint={run_dir / 'checkpoint.pt'}: refused: ")
    assert result.stderr.count("\n") == 1, result.stderr  # no warning from torch
    assert "objects other than tensors and plain values" in result.stderr
    assert "for safety it was not loaded" in result.stderr
    assert "weights_only" not in result.stderr and "Warning" not in result.stderr


# --- 5. config files of the user's own -----------------------------------------------------

MYSGD = "defaults:\n  - sgd\n  - _self_\nname: mysgd\nlr: 0.0123\n"
SHADOW = "name: shadow\n_target_: trainrepro.optim.factory.sgd\nlr: 0.777\n"
EXPERIMENT = """\
# @package _global_
defaults:
  - override /optimizer: adam
  - _self_
optimizer:
  lr: 0.00042
seed: 7
"""


@pytest.fixture
def mine(tmp_path):
    """A user's config folder: optimizer mysgd (our sgd, another lr), a file that shadows our
    optimizer sgd, and an experiment mine."""
    root = tmp_path / "mine"
    (root / "optimizer").mkdir(parents=True)
    (root / "experiment").mkdir()
    (root / "optimizer" / "mysgd.yaml").write_text(MYSGD)
    (root / "optimizer" / "sgd.yaml").write_text(SHADOW)
    (root / "experiment" / "mine.yaml").write_text(EXPERIMENT)
    return root


def run_config(tmp_path, *args: str) -> dict:
    run_dir = tmp_path / "run"
    result = cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_user_optimizer_from_config_dir_is_run(tmp_path, mine):
    # The flag among the overrides, as a user may type it: Hydra alone would refuse that order.
    config = run_config(tmp_path, *RUN, "--config-dir", "mine", "optimizer=mysgd")
    assert config["optimizer"]["name"] == "mysgd" and config["optimizer"]["lr"] == 0.0123
    assert config["optimizer"]["momentum"] == 0.9  # from our sgd, which it extends


def test_a_user_experiment_from_hydra_searchpath_is_run(tmp_path, mine):
    config = run_config(tmp_path, *RUN, "hydra.searchpath=[file://mine]", "+experiment=mine")
    assert config["optimizer"]["name"] == "adam" and config["optimizer"]["lr"] == 0.00042
    assert config["seed"] == 7


def test_our_option_comes_before_a_user_file_of_the_same_name(tmp_path, mine):
    """Hydra searches conf/ before --config-dir; the pre-check composes in the same order."""
    config = run_config(tmp_path, "--config-dir", str(mine), *RUN, "optimizer=sgd")
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["lr"] == 0.1
    plan = cli("plan", f"--config-dir={mine}", *RUN, "optimizer=sgd", cwd=tmp_path)
    assert plan.returncode == 0 and re.search(r"^\s+1\s+0\.1\s", plan.stdout, re.M), plan.stdout


@pytest.mark.parametrize("flag", [["-cd", "mine"], ["--config-dir=mine"]])
def test_plan_sees_a_user_option(tmp_path, mine, flag):
    result = cli("plan", *flag, *RUN, "optimizer=mysgd", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+1\s+0\.0123\s", result.stdout, re.M), result.stdout


def test_user_options_are_listed_as_valid(tmp_path, mine):
    line = refused(tmp_path, "--config-dir", "mine", *RUN, "optimizer=nope")
    assert line.startswith("error: optimizer=nope: unknown option; valid: ")
    assert ", mysgd, " in line and ", sgd, " in line
    line = refused(tmp_path, "-cd", "mine", *RUN, "+experiment=nope")
    assert ", mine, " in line and "gn/bn" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config-dir", "nope"], "error: --config-dir=nope: no such folder"),
        (["hydra.searchpath=[file://nope]"], "error: hydra.searchpath=file://nope: no such folder"),
        (
            ["hydra.searchpath=[pkg://mine]"],
            "error: hydra.searchpath=pkg://mine: only file://DIR is supported here "
            "(or --config-dir DIR)",
        ),
    ],
)
def test_a_user_folder_that_cannot_be_searched_is_one_line(tmp_path, args, expected):
    assert refused(tmp_path, *args, *RUN, "optimizer=mysgd") == expected

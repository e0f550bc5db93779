"""The tool's help page through the command line: `--help`, `-h`, `help [command]` and
`<command> --help`. The page is read from conf/, so a new group or option must show up on it;
Hydra's own flags keep working beside it."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import CONF_DIR
from support import cli as run

from trainrepro.config import groups, options
from trainrepro.help import COMMANDS as DECLARED
from trainrepro.help import SUBCOMMANDS

# The page names every declared command; these must always be among them.
CORE = ("run", "plan", "reproduce", "cv", "bn-alpha", "help")
COMMANDS = tuple(DECLARED)
ARGPARSE_COMMANDS = tuple(SUBCOMMANDS)
KEYS = ("epochs", "seed", "device", "precision", "batch_size")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    result = run("--help", cwd=tmp_path_factory.mktemp("help"))
    assert result.returncode == 0, result.stderr
    return result.stdout


def section(text: str, title: str) -> list[str]:
    """The indented lines under ``title:`` (a line of its own) up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    return body


def group_block(page: str, group: str) -> str:
    """The rows of ``group`` in the groups section (its first row and the continued ones)."""
    rows = section(page, "config groups")
    start = next(i for i, r in enumerate(rows) if r.split()[0] == group)
    block = [rows[start]]
    for r in rows[start + 1 :]:
        if not r.startswith(" " * 4):  # the next group's row
            break
        block.append(r)
    return "\n".join(block)


@pytest.mark.parametrize(
    "args",
    [["-h"], ["help"], ["help", "help"], ["help", "run"], ["run", "--help"], ["model=vgg", "-h"]],
    ids=lambda a: " ".join(a),
)
def test_every_form_prints_the_same_page_and_writes_nothing(tmp_path, page, args):
    # model=vgg is not an option: the page comes before any composing, so a bad override
    # cannot hide it.
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == page and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_prints_it_too(tmp_path, page):
    script = Path(sys.executable).parent / "trainrepro"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout == page


def test_the_page_is_ours_not_hydras(page):
    assert page.startswith("usage: trainrepro ")
    assert "powered by Hydra" not in page


def test_every_command_has_a_line(page):
    rows = section(page, "commands:")
    named = [r.split()[0] for r in rows if not r.startswith(" " * 4)]
    assert named == list(COMMANDS)


def test_every_group_and_option_is_listed(page):
    for group in groups():
        block = group_block(page, group)
        words = {w.rstrip("*") for w in re.split(r"[\s,:]+", block)}
        for option in options(group):
            *folder, name = option.split("/")
            if name.startswith("_"):
                continue
            assert name in words, f"{group}: {option} missing from\n{block}"
            if folder:  # nested: experiment/<paper>/<preset>, hydra/launcher/<name>
                assert f"{folder[0]}/" in block or f"{folder[0]}=" in block, option


def section_text(page: str, title: str) -> str:
    return "\n".join(section(page, title))


def test_underscore_files_are_not_offered(page):
    assert any(o.rsplit("/", 1)[-1].startswith("_") for g in groups() for o in options(g))
    assert "_base" not in page
    assert not re.search(r"(^|[\s,/])_\w", section_text(page, "config groups"))


def test_default_options_are_marked_from_the_defaults_list(page):
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    chosen = {k: v for item in defaults if isinstance(item, dict) for k, v in item.items()}
    for group in set(chosen) & set(groups()):
        marked = [w.strip(",") for w in group_block(page, group).split() if w.strip(",")[-1] == "*"]
        assert marked == [f"{chosen[group]}*"], group


def test_key_defaults_are_those_of_config_yaml(page):
    top = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    shown = dict(r.split()[0].split("=", 1) for r in section(page, "most used keys"))
    assert set(KEYS) <= set(shown)
    for key, value in shown.items():
        expected = top[key]
        if isinstance(expected, bool) or expected is None:
            expected = {True: "true", False: "false", None: "null"}[expected]
        assert value == str(expected), key


@pytest.mark.parametrize("data", ["/some/where/data", None])
def test_the_page_says_where_data_is_read(tmp_path, data):
    env = {k: v for k, v in os.environ.items() if k != "TRAINREPRO_DATA"}
    if data:
        env["TRAINREPRO_DATA"] = data
    text = section_text(run("help", cwd=tmp_path, env=env).stdout, "data:")
    assert "dataset.root" in text and "$TRAINREPRO_DATA" in text
    assert "export TRAINREPRO_DATA=" in text and "dataset.root=/path/to/data" in text
    assert (f"TRAINREPRO_DATA={data}" if data else "TRAINREPRO_DATA is not set") in text


def test_the_page_points_to_hydras_own(page):
    assert "--hydra-help" in page and "--cfg job" in page


@pytest.mark.parametrize(
    "args", [["plan", "--help"], ["plan", "-h"], ["help", "plan"], ["plan", "epochs=3", "--help"]]
)
def test_plan_help_is_a_usage_not_a_plan(tmp_path, args):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trainrepro plan ")
    assert "total:" not in result.stdout
    assert not any(line.split()[:1] == ["epoch"] for line in result.stdout.splitlines())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ARGPARSE_COMMANDS)
def test_each_command_has_its_page(tmp_path, command):
    direct = run(command, "--help", cwd=tmp_path)
    via_help = run("help", command, cwd=tmp_path)
    for result in (direct, via_help):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: trainrepro {command} ")
    assert direct.stdout == via_help.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["help", "nosuch"], ["help", "cv", "plan"]])
def test_help_for_an_unknown_command_is_one_line(tmp_path, args):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: help={' '.join(args[1:])}: ")
    if args[1] == "nosuch":
        assert lines[0].endswith(f"unknown command; valid: {', '.join(COMMANDS)}")


def test_every_subcommand_is_declared_and_importable():
    assert set(CORE) <= set(COMMANDS)
    assert set(SUBCOMMANDS) <= set(COMMANDS)
    for target in SUBCOMMANDS.values():
        module_name, function = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function)), target


def test_hydras_flags_still_work(tmp_path):
    hydra_help = run("--hydra-help", cwd=tmp_path)
    assert hydra_help.returncode == 0 and "Hydra (" in hydra_help.stdout
    info = run("--info", cwd=tmp_path)
    assert info.returncode == 0 and "Hydra" in info.stdout
    for prefix in ([], ["run"]):
        shown = run(*prefix, "--cfg", "job", "model=lenet5", "epochs=3", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        cfg = yaml.safe_load(shown.stdout)
        assert cfg["model"]["name"] == "lenet5" and cfg["epochs"] == 3
    assert list(tmp_path.iterdir()) == []

"""Every option of every config group composes, builds, and trains a few steps.

The options are read from ``conf/<group>/`` so a new optimizer, norm or model is tested
without editing this file; its defaults must be small enough to build, or it needs an entry
in ``support.SMALL``.
"""

from __future__ import annotations

import math

import pytest
from support import (
    SHARED_DATA,
    SMALL,
    TINY_DATA,
    TINY_MODEL,
    TINY_RUN,
    make_cfg,
    options,
    write_fake_cifar100,
    write_image_tree,
)

from trainrepro.engine.train import train

GROUPS = ("model", "normalization", "optimizer", "schedule", "dataset")


def dataset_overrides(option: str, tmp_path) -> tuple[str, ...]:
    small = ("dataset.train_size=512",)
    if option == "synthetic":
        return small
    if option == "cifar100":
        return (f"dataset.root={write_fake_cifar100(tmp_path)}",)
    if option == "imagefolder":
        return (f"dataset.root={write_image_tree(tmp_path)}",)
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set TRAINREPRO_DATA)")
    if option == "mnist":
        return (f"dataset.root={SHARED_DATA}", "dataset.split_test_set=true", *small)
    return (f"dataset.root={SHARED_DATA}", *small)


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_builds_and_trains(group, option, tmp_path):
    overrides = {"dataset": TINY_DATA, "model": TINY_MODEL}
    if group == "dataset":
        overrides["dataset"] = (f"dataset={option}", *dataset_overrides(option, tmp_path / "data"))
    else:
        overrides[group] = (f"{group}={option}", *SMALL.get((group, option), ()))
    cfg = make_cfg(
        *TINY_RUN, *(o for g in overrides.values() for o in g), "epochs=1", "batch_size=16"
    )
    assert cfg[group].name == option
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed", summary
    final = summary["final"]
    assert final["updates"] >= 1 and final["batch_size"] == 16
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["test_loss"])
    assert 0.0 <= final["test_acc"] <= 100.0


def _composer_cases() -> list[tuple[str, list[str]]]:
    """Per paper and profile, the first run of two presets and the last run (other values of
    the swept keys), as the runner would start them."""
    from pathlib import Path

    from trainrepro.reproduce.cli import run_specs
    from trainrepro.reproduce.papers import PAPERS

    cases = []
    for name, paper in sorted(PAPERS.items()):
        for profile_name, profile in paper.profiles.items():
            specs = run_specs(paper, profile, Path("runs"), ["epochs=2"])
            first = {}
            for run_dir, overrides in specs:
                first.setdefault(overrides[0], (run_dir, overrides))
            picked = [*list(first.values())[:2], specs[-1]]
            cases += [(f"{name}-{profile_name}:{d.name}", o) for d, o in picked]
    return cases


def test_composer_gives_what_compose_gives():
    """The preflight's Composer (group choices composed once, values applied by Hydra's own
    routine) must build exactly the config a plain compose builds, for every paper's runs."""
    from omegaconf import OmegaConf

    from trainrepro.config import Composer, compose
    from trainrepro.errors import ConfigError

    composer = Composer()
    for label, overrides in _composer_cases():
        fast = OmegaConf.to_container(composer(overrides))
        assert fast == OmegaConf.to_container(compose(overrides)), label
    bad = ["+experiment=gn/bn", "optimizer.lr=-1", "optimizer.nope=1"]
    with pytest.raises(ConfigError) as fast_error:
        composer(bad)
    with pytest.raises(ConfigError) as plain_error:
        compose(bad)
    assert str(fast_error.value) == str(plain_error.value)

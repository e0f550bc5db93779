"""The Liu et al. (2020) presets, their quick profile, the make target's run list, and the
report script, on tiny real runs."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

import pandas as pd
import pytest
import torch
from support import CONF_DIR, REPO, TINY, make_cfg

from trainrepro.config import instantiate
from trainrepro.train import train

PRESET_DIR = CONF_DIR / "experiment" / "radam"
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.startswith("_"))
PROFILES = {"full": (), "quick": ("profile=radam_quick",)}
OPTIMIZER = {  # preset -> optimizer option, and whether its weight decay is decoupled
    "sgd": ("sgd", False),
    "adam": ("adam", True),
    "radam": ("radam", True),
    "adam_warmup": ("adam_warmup", True),
    "adam_2k": ("adam_2k", True),
    "adam_eps": ("adam_eps", True),
}

spec = importlib.util.spec_from_file_location("radam_report", REPO / "scripts/radam_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_every_preset_is_known():
    assert PRESETS == sorted(OPTIMIZER)


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_builds_and_keeps_the_papers_setting(preset, profile):
    cfg = make_cfg(f"+experiment=radam/{preset}", *PROFILES[profile])
    name, decoupled = OPTIMIZER[preset]
    assert cfg.optimizer.name == name
    assert cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer.get("decoupled_weight_decay", False) == decoupled
    assert cfg.model.name == "resnet_cifar" and cfg.normalization.name == "bn"
    assert cfg.dataset.name == "cifar10" and cfg.schedule.name == "step"
    assert cfg.schedule.factor == 0.1
    # Steps at 81 and 122 of 164 epochs, i.e. at ~50% and ~75% of training, in both profiles.
    fractions = [m / cfg.epochs for m in cfg.schedule.milestones]
    assert fractions == pytest.approx([81 / 164, 122 / 164], abs=0.01)
    assert list(cfg.callbacks) == ["grad_hist"]
    if preset != "sgd":
        assert list(cfg.optimizer.betas) == [0.9, 0.999]
    if preset == "adam_warmup":
        assert cfg.schedule.warmup_steps == 100
    if preset == "adam_2k":
        assert cfg.optimizer.k == (2000 if profile == "full" else 500)
    instantiate("optimizer", cfg.optimizer, torch.nn.Linear(2, 2))
    if profile == "full":
        assert (cfg.epochs, cfg.batch_size, cfg.model.depth) == (164, 128, 20)
        assert cfg.dataset.train_size is None
    else:
        assert (cfg.epochs, cfg.batch_size, cfg.model.depth) == (10, 32, 8)
        assert cfg.dataset.train_size == 10_000


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_make_target_lists_every_run_once(profile):
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "reproduce-radam", f"PROFILE={profile}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = re.findall(r'"(runs/[^"]+)"', dry)
    dirs = [line.split()[0] for line in lines]
    assert len(dirs) == len(set(dirs)) == (20 if profile == "quick" else 90)
    for line in lines:
        run_dir, *overrides = line.split()
        preset = re.match(r"runs/radam(?:-quick)?/(\w+?)(?:_w\d+)?/lr", run_dir).group(1)
        assert f"+experiment=radam/{preset}" in overrides
        lr = run_dir.split("/lr")[1].split("/")[0]
        assert f"optimizer.lr={lr}" in overrides
        assert ("profile=radam_quick" in overrides) == (profile == "quick")


def _tiny_run(root, preset: str, lr: float, seed: int, final_acc: float | None = None) -> None:
    run_dir = root / preset / f"lr{lr:g}" / f"seed{seed}"
    optimizer = {"sgd": ["optimizer=sgd"], "radam": ["optimizer=radam"]}.get(
        preset, ["optimizer=adam"]
    )
    cfg = make_cfg(
        *TINY,
        *optimizer,
        f"optimizer.lr={lr}",
        f"seed={seed}",
        "+callbacks=grad_hist",
        "callbacks.grad_hist.updates=12",
        *(["schedule.warmup_steps=10"] if preset == "adam_warmup" else []),
    )
    train(cfg, run_dir)
    if final_acc is not None:  # pin the accuracy, to test the table's arithmetic
        metrics = pd.read_csv(run_dir / "metrics.csv")
        metrics.loc[metrics.index[-1], "test_acc"] = final_acc
        metrics.to_csv(run_dir / "metrics.csv", index=False)


def test_report_on_tiny_real_runs(tmp_path):
    root = tmp_path / "radam-quick"
    for preset, acc in (("adam", 60.0), ("adam_warmup", None), ("radam", 80.0)):
        _tiny_run(root, preset, 0.1, 0, final_acc=acc)
    # The rest of the grid: copies with pinned accuracies (RAdam's spread 1, Adam's 30 points).
    for preset, accs in (("adam", (60.0, 70.0, 80.0, 90.0)), ("radam", (80.0, 80.5, 81.0, 80.2))):
        src = root / preset / "lr0.1" / "seed0"
        for lr, acc in zip(report.GRID, accs, strict=True):
            dst = root / preset / f"lr{lr:g}" / "seed1"
            shutil.copytree(src, dst)
            (dst / "config.yaml").write_text(
                (dst / "config.yaml").read_text().replace("lr: 0.1", f"lr: {lr}")
            )
            metrics = pd.read_csv(dst / "metrics.csv")
            metrics.loc[metrics.index[-1], "test_acc"] = acc
            metrics.to_csv(dst / "metrics.csv", index=False)
    out = tmp_path / "out"
    assert report.main([str(root), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| RAdam | 0.1 | 2/2 |" in table and "91.06 (Sec. 5.2)" in table
    assert "91.38 (Table 1)" in table and "90.54 (Table 1)" in table
    # Grid spreads of the means: RAdam 81.0 - 80.0, Adam 90.0 - 60.0 (seed 0 pinned at lr 0.1).
    assert "RAdam 1.00 points, Adam 30.00" in table and "smaller): **pass**" in table
    assert "change of the median log10|g|" in table
    for name in ("lr_robustness", "curves", "grad_hist", "rectification"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["run_dir"].nunique() == 11


def test_report_refuses_a_flat_folder(tmp_path, capsys):
    _tiny_run(tmp_path, "adam", 0.1, 0)
    flat = tmp_path / "adam" / "lr0.1"
    assert report.main([str(flat), "--out", str(tmp_path / "out")]) == 2
    assert "expected <preset>/lr<lr>/seed<k>" in capsys.readouterr().err

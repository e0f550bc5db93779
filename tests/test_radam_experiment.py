"""The Liu et al. (2020) presets, their quick profile, the declared run lists, and the report
(`trainrepro reproduce radam`) on tiny real runs and on the committed runs.csv."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch
from support import CONF_DIR, REPO, TINY, make_cfg

from trainrepro.config import instantiate
from trainrepro.engine.train import train
from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.data import results
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.papers.radam import GRID

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


def report(root, out) -> int:
    """`trainrepro reproduce radam --profile quick --report-only` on the runs under root."""
    args = ["radam", "--profile", "quick", "--report-only", "--runs-root", str(root)]
    return reproduce([*args, "--out", str(out)])


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
def test_declared_runs_are_each_listed_once(profile, tmp_path, capsys):
    args = ["radam", "--profile", profile, "--dry-run", "--runs-root", str(tmp_path / "r")]
    assert reproduce(args) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    dirs = [line.split()[1] for line in lines]
    assert len(dirs) == len(set(dirs)) == (20 if profile == "quick" else 90)
    for line in lines:
        _, run_dir, *overrides = line.split()
        preset = re.match(r".*/r/(\w+?)(?:_w\d+)?/lr", run_dir).group(1)
        assert f"+experiment=radam/{preset}" in overrides
        lr = run_dir.split("/lr")[1].split("/")[0]
        assert f"optimizer.lr={lr}" in overrides
        assert ("profile=radam_quick" in overrides) == (profile == "quick")
        warmup = re.search(r"_w(\d+)/", run_dir)
        assert (f"schedule.warmup_steps={warmup.group(1)}" in overrides) if warmup else True


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
        for lr, acc in zip(GRID, accs, strict=True):
            dst = root / preset / f"lr{lr:g}" / "seed1"
            shutil.copytree(src, dst)
            (dst / "config.yaml").write_text(
                (dst / "config.yaml").read_text().replace("lr: 0.1", f"lr: {lr}")
            )
            metrics = pd.read_csv(dst / "metrics.csv")
            metrics.loc[metrics.index[-1], "test_acc"] = acc
            metrics.to_csv(dst / "metrics.csv", index=False)
    out = tmp_path / "out"
    assert report(root, out) == 0
    table = (out / "table.md").read_text()
    assert "| RAdam | 0.1 | 2/2 |" in table and "91.06 (Sec. 5.2)" in table
    assert "91.38 (Table 1)" in table and "90.54 (Table 1)" in table
    # Grid spreads of the means: RAdam 81.0 - 80.0, Adam 90.0 - 60.0 (seed 0 pinned at lr 0.1).
    text = (out / "REPORT.md").read_text()
    assert "RAdam 1.00 points, Adam 30.00" in text and "`lr_robustness` (**pass**)" in text
    assert "change of the median log10|g|" in text
    claims = json.loads((out / "verdicts.json").read_text())["claims"]
    assert claims[0]["status"] == "pass" and claims[1]["status"] in ("pass", "fail")
    kept = json.loads((out / "grad_hist_distortion.json").read_text())
    assert set(kept["runs"]) == {"adam", "adam_warmup", "radam"}
    for name in ("lr_robustness", "curves", "grad_hist", "rectification"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["run_dir"].nunique() == 11


def test_report_refuses_a_flat_folder(tmp_path, capsys):
    _tiny_run(tmp_path, "adam", 0.1, 0)
    flat = tmp_path / "adam" / "lr0.1"
    assert report(flat, tmp_path / "out") == 2
    assert "<preset>/lr<lr>/seed<seed> run directories" in capsys.readouterr().err


def test_committed_quick_results_keep_their_numbers():
    """The committed runs.csv (the bf16 + channels_last run) still gives the committed report's
    numbers."""
    out = REPO / "results" / "radam-quick"
    res = results(PAPERS["radam"], "quick", out, None, out / "runs.csv")
    table = PAPERS["radam"].table(res)
    assert "| RAdam | 0.1 | 2/2 | 62.02 ± 0.44 (61.71–62.33) | 0 | 91.06 (Sec. 5.2) |" in table
    assert "| Adam | 0.1 | 2/2 | 33.27 ± 2.41 (31.56–34.97) | 0 | — | 90.54 (Table 1) |" in table
    robust, hist = (c.verdict(res) for c in PAPERS["radam"].claims)
    assert "RAdam 3.08 points, Adam 29.30" in robust.detail and robust.status == "pass"
    assert hist.status == "pass" and "Adam -2.40 (from -2.92 to -5.32" in hist.detail

"""The Liu et al. (2020) presets, their quick profile, the declared run lists, and the report
(`trainrepro reproduce radam`) on tiny real runs and on the committed runs.csv."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from support import CONF_DIR, REPO, TINY, make_cfg

from trainrepro.config import instantiate
from trainrepro.engine.train import train
from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import Results
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
    lines = capsys.readouterr().out.splitlines()[:-2]  # the runs, not the count and estimate
    dirs = [line.split()[1] for line in lines]
    assert len(dirs) == len(set(dirs)) == (59 if profile == "quick" else 106)
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


# Pinned final accuracies over the grid (0.1, 0.03, 0.01, 0.003), seeds 1 and 2: Adam's spread
# 30 and 26 points, RAdam's 1.0 and 0.9.
PINNED = {
    "adam": {1: (60.0, 70.0, 80.0, 90.0), 2: (62.0, 71.0, 79.0, 88.0)},
    "radam": {1: (80.0, 80.5, 81.0, 80.2), 2: (80.0, 80.3, 80.1, 80.9)},
}


def test_report_on_tiny_real_runs(tmp_path):
    root = tmp_path / "radam-quick"
    for preset, acc in (("adam", 60.0), ("adam_warmup", None), ("radam", 80.0)):
        _tiny_run(root, preset, 0.1, 0, final_acc=acc)
    # The rest: copies of the seed-0 runs with pinned accuracies.
    for preset, seeds in PINNED.items():
        src = root / preset / "lr0.1" / "seed0"
        for seed, accs in seeds.items():
            for lr, acc in zip(GRID, accs, strict=True):
                dst = root / preset / f"lr{lr:g}" / f"seed{seed}"
                shutil.copytree(src, dst)
                text = (dst / "config.yaml").read_text().replace("lr: 0.1", f"lr: {lr}")
                (dst / "config.yaml").write_text(text.replace("seed: 0", f"seed: {seed}"))
                metrics = pd.read_csv(dst / "metrics.csv")
                metrics.loc[metrics.index[-1], "test_acc"] = acc
                metrics.to_csv(dst / "metrics.csv", index=False)
    out = tmp_path / "out"
    assert report(root, out) == 0
    table = (out / "table.md").read_text()
    assert "| RAdam | 0.1 | 3/3 |" in table and "91.06 (Sec. 5.2)" in table
    assert "91.38 (Table 1)" in table and "90.54 (Table 1)" in table
    # Per seed that ran the whole grid (1, 2): Adam's spread minus RAdam's, 29.0 and 25.1.
    text = (out / "REPORT.md").read_text()
    assert "per seed: seed 1 +29.00, seed 2 +25.10" in text
    assert "mean spread over these seeds: Adam 28.00, RAdam 0.95 points" in text
    assert "`lr_robustness` (**pass**)" in text
    assert "change of the median log10|g|" in text
    claims = {c["key"]: c for c in json.loads((out / "verdicts.json").read_text())["claims"]}
    assert claims["lr_robustness"]["n"] == 2 and claims["lr_robustness"]["low"] > 0
    # Only seed 0 has all three histograms: one value, no interval.
    assert claims["gradient_distortion"]["status"] == "inconclusive"
    assert claims["gradient_distortion"]["n"] == 1
    for key in ("lr_robustness_sgd", "sgd_accuracy", "adam_2k"):  # no SGD, no Adam-2k runs
        assert claims[key]["status"] == "not run"
    kept = json.loads((out / "grad_hist_distortion.json").read_text())
    assert set(kept["seeds"]["0"]) == {"adam", "adam_warmup", "radam"}
    assert set(kept["seeds"]["1"]) == {"adam", "radam"}
    assert kept["source"] == "runs/radam-quick/<preset>/lr0.1/seed<k>/grad_hist.pt"
    for name in ("lr_robustness", "curves", "grad_hist", "rectification"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["run_dir"].nunique() == 3 + 2 * 4 * 2


def _final(rows: list[tuple[str, float, int, str, float]]) -> Results:
    """Results of final epochs only: (preset, lr, seed, status, test accuracy) per run."""
    df = pd.DataFrame(
        [
            {"run_dir": f"{p}/lr{lr:g}/seed{s}", "preset": p, "grid_lr": lr, "seed": s,
             "status": st, "epoch": 10, "test_acc": acc}
            for p, lr, s, st, acc in rows
        ]
    )  # fmt: skip
    return Results(PAPERS["radam"], "quick", "radam-quick", df, None, Path("."), "test")


def test_a_diverged_run_counts_at_chance_in_the_spread():
    rows = [("radam", lr, s, "completed", 80.0 + s) for lr in GRID for s in (0, 1, 2)]
    rows += [("sgd", lr, s, "completed", 85.0) for lr in GRID for s in (0, 1, 2)]
    rows += [("sgd", 0.1, s, "running", 50.0) for s in (3,)]  # unfinished: left out
    res = _final([r for r in rows if not (r[0] == "sgd" and r[1] == 0.1 and r[2] == 2)]
                 + [("sgd", 0.1, 2, "diverged", float("nan"))])  # fmt: skip
    claim = next(c for c in PAPERS["radam"].claims if c.key == "lr_robustness_sgd")
    m = claim.measure(res)
    assert m.values == (0.0, 0.0, 75.0)  # seed 2's SGD at lr 0.1 diverged: 85 - 10
    assert "diverged runs, counted at chance: 1" in m.detail
    sgd = next(c for c in PAPERS["radam"].claims if c.key == "sgd_accuracy")
    # best lr by mean: RAdam's lrs all tie (the first wins), SGD's is one of its 85s
    assert [round(v, 6) for v in sgd.measure(res).values] == [-5.0, -4.0, -3.0]
    assert sgd.verdict(res).status == "pass"  # RAdam wholly below SGD + 0.5


def test_report_refuses_a_flat_folder(tmp_path, capsys):
    _tiny_run(tmp_path, "adam", 0.1, 0)
    flat = tmp_path / "adam" / "lr0.1"
    assert report(flat, tmp_path / "out") == 2
    assert "<preset>/lr<lr>/seed<seed> run directories" in capsys.readouterr().err


def test_committed_quick_results_keep_their_numbers():
    """The committed runs.csv (all 59 runs of the quick profile, bf16 + channels_last, re-run
    on 2026-12-05) still gives the committed report's numbers and verdicts."""
    out = REPO / "results" / "radam-quick"
    res = results(PAPERS["radam"], "quick", out, None, out / "runs.csv")
    table = PAPERS["radam"].table(res)
    assert "| RAdam | 0.1 | 5/5 | 60.60 ± 1.14 (59.12–61.71) | 0 | 91.06 (Sec. 5.2) |" in table
    assert "| Adam | 0.1 | 3/3 | 21.15 ± 1.33 (19.67–22.24) | 0 | — | 90.54 (Table 1) |" in table
    v = {c.key: c.verdict(res) for c in PAPERS["radam"].claims}
    assert {k: x.status for k, x in v.items()} == {
        "lr_robustness": "pass",
        "lr_robustness_sgd": "pass",
        "sgd_accuracy": "inconclusive",  # RAdam ahead, [+0.22, +2.84] straddles +0.5
        "adam_2k": "pass",
        "gradient_distortion": "pass",
    }
    assert "+38.39 points, 95% interval [+36.45, +40.34] over 3 seeds" in v["lr_robustness"].detail
    assert "Adam 41.67, RAdam 3.27 points" in v["lr_robustness"].detail
    assert "+14.48 points, 95% interval [+11.97, +16.98] over 5 seeds" in v[
        "lr_robustness_sgd"
    ].detail
    assert "+1.53 points, 95% interval [+0.22, +2.84] over 5 seeds" in v["sgd_accuracy"].detail
    assert "+19.15 points, 95% interval [+7.97, +30.33] over 3 seeds" in v["adam_2k"].detail
    hist = v["gradient_distortion"].detail
    assert "+2.14 decades, 95% interval [+1.52, +2.77] over 3 seeds" in hist
    assert "Adam -2.43 (from -2.92 to -5.35" in hist

"""The AdamW declaration (Loshchilov & Hutter 2019, Figure 2): the presets, the grids each
profile runs, the separability and AdamW-versus-Adam claims on made-up heat maps (pass, fail,
inconclusive), and the report with its four heat maps from a runs.csv."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support import REPO, make_cfg

from trainrepro.optim.decoupled import normalized_weight_decay
from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import FAIL, INCONCLUSIVE, PASS
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.papers.adamw_claims import GRID, slope

PAPER = PAPERS["adamw"]
PROFILE_CONFIG = {
    "full": (),
    "quick": ("profile=adamw_quick",),
    "medium": ("profile=adamw_medium",),
}
OPTIMIZER = {"adam": ("adam", False), "adamw": ("adamw", True), "sgd": ("sgd", False),
             "sgdw": ("sgdw", True)}  # fmt: skip


@pytest.mark.parametrize("profile", list(PROFILE_CONFIG))
def test_every_profile_runs_each_grid_at_three_seeds(profile):
    runs = PAPER.profiles[profile].runs
    assert len(runs) == len({r.path for r in runs}) == 4 * 9 * 3
    for run in runs:
        preset, lr, wd, _ = run.path.split("/")
        lrs, wds, key = GRID[preset]
        assert float(lr[2:]) in lrs and float(wd[2:]) in wds
        assert run.overrides == (f"optimizer.lr={lr[2:]}", f"{key}={wd[2:]}")
    # the README's defaults are the grids' centres
    assert GRID["adamw"][0][1] == 0.001 and GRID["sgdw"][0][1] == 0.05
    assert GRID["adamw"][1][1] == GRID["sgdw"][1][1] == 0.025


@pytest.mark.parametrize("profile", list(PROFILE_CONFIG))
@pytest.mark.parametrize("preset", sorted(OPTIMIZER))
def test_presets_compose_with_the_papers_optimizers(preset, profile):
    cfg = make_cfg(f"+experiment=adamw/{preset}", *PROFILE_CONFIG[profile])
    name, decoupled = OPTIMIZER[preset]
    assert cfg.optimizer.name == name and cfg.schedule.name == "cosine"
    assert cfg.model.name == "resnet_cifar" and cfg.dataset.name == "cifar10"
    if decoupled:  # eta_t * lambda per update, lambda from lambda_norm (the official code)
        assert cfg.optimizer.decay_scale == "schedule" and cfg.optimizer.weight_decay_norm == 0.025
    else:
        assert cfg.optimizer.weight_decay == 1e-3
        assert not cfg.optimizer.get("decoupled_weight_decay", False)
    expect = {"full": (100, 128, 26, None), "quick": (5, 32, 8, 10_000),
              "medium": (2, 128, 8, None)}[profile]  # fmt: skip
    assert (cfg.epochs, cfg.batch_size, cfg.model.depth, cfg.dataset.train_size) == expect


def test_the_quick_profiles_lambda_is_the_one_its_header_says():
    # lambda_norm 0.025 * sqrt(32 / (10,000 x 5)) = 6.32e-4 per update
    assert normalized_weight_decay(0.025, 32, 10_000, 5) == pytest.approx(6.3246e-4, rel=1e-4)


def test_slope_is_that_of_log_best_wd_against_log_lr():
    assert slope({0.0125: 4e-3, 0.05: 1e-3, 0.2: 2.5e-4}) == pytest.approx(-1.0)
    assert slope({0.0125: 1e-3, 0.05: 1e-3, 0.2: 1e-3}) == pytest.approx(0.0)
    assert slope({0.0125: 1e-3, 0.05: 4e-3, 0.2: 4e-3}) == pytest.approx(0.5)


# ---------------------------------------------------------------- claims on made-up heat maps
DIAGONAL = (2, 1, 0)  # best wd index at lr index 0, 1, 2: best wd ∝ 1/lr, slope -1
FLAT = (1, 1, 1)  # slope 0
TILTED = (1, 1, 2)  # slope +0.5


def write_runs(path, best: dict[str, list[tuple[int, ...]]], adamw_gain: list[float]) -> None:
    """Final accuracies: per preset and seed, 80 (85 for SGD) at the best wd of each lr and 5
    points less per wd step away; AdamW shifted by its seed's gain over Adam."""
    rows = []
    for preset, (lrs, wds, _) in GRID.items():
        for seed, tops in enumerate(best[preset]):
            base = (85.0 if preset.startswith("sgd") else 80.0) + 0.1 * seed
            base += adamw_gain[seed] if preset == "adamw" else 0.0
            for i, lr in enumerate(lrs):
                for j, wd in enumerate(wds):
                    rows.append({"run_dir": f"runs/adamw-quick/{preset}/lr{lr:g}/wd{wd:g}/"
                                 f"seed{seed}", "epoch": 5, "status": "completed",
                                 "test_acc": base - 5.0 * abs(j - tops[i])})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


def judge(tmp_path, coupled, decoupled, gain) -> dict:
    best = {"adam": coupled, "sgd": coupled, "adamw": decoupled, "sgdw": decoupled}
    write_runs(tmp_path / "runs.csv", best, gain)
    res = results(PAPER, "quick", tmp_path, None, tmp_path / "runs.csv")
    return {c.key: c.verdict(res) for c in PAPER.claims}


def test_claims_pass(tmp_path):
    v = judge(tmp_path, [DIAGONAL] * 3, [FLAT, FLAT, TILTED], [2.0, 1.5, 2.5])
    for key in ("separable_adam", "separable_sgd", "adamw_beats_adam"):
        assert v[key].status == PASS, v[key].detail
    assert v["separable_sgd"].interval.mean == pytest.approx((1 + 1 + 0.5) / 3)
    assert "seed 0: SGD (L2) -1.00, SGDW +0.00" in v["separable_sgd"].detail
    assert v["adamw_beats_adam"].interval.mean == pytest.approx(2.0)
    # Adam's three diagonal optima tie: the first (smallest lr) is taken
    assert (
        "Adam lr 0.00025, L2 0.004; AdamW lr 0.00025, lambda_norm 0.025"
        in v["adamw_beats_adam"].detail
    )


def test_claims_fail(tmp_path):
    v = judge(tmp_path, [FLAT, FLAT, TILTED], [DIAGONAL] * 3, [-2.0, -1.5, -2.5])
    for key in ("separable_adam", "separable_sgd", "adamw_beats_adam"):
        assert v[key].status == FAIL, v[key].detail


def test_claims_inconclusive(tmp_path):
    v = judge(tmp_path, [DIAGONAL, FLAT, DIAGONAL], [FLAT, DIAGONAL, TILTED], [2.0, -2.0, 0.5])
    for key in ("separable_adam", "separable_sgd", "adamw_beats_adam"):
        assert v[key].status == INCONCLUSIVE, v[key].detail


def test_report_from_a_runs_csv_draws_the_four_heat_maps(tmp_path):
    write_runs(
        tmp_path / "runs.csv",
        {"adam": [DIAGONAL] * 3, "sgd": [DIAGONAL] * 3, "adamw": [FLAT] * 3, "sgdw": [FLAT] * 3},
        [1.0] * 3,
    )
    out = tmp_path / "out"
    args = ["adamw", "--profile", "quick", "--from-csv", str(tmp_path / "runs.csv")]
    assert reproduce([*args, "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    # Adam's row wd 0.001: the best at lr 0.001 only; errors 100 - (80 + 0.1 seed) (- 5)
    assert "| 0.001 | 24.90 ± 0.10 (n=3) | **19.90 ± 0.10 (n=3)** | 24.90 ± 0.10 (n=3) |" in table
    verdicts = {c["key"]: c["status"] for c in json.loads((out / "verdicts.json").read_text())[
        "claims"]}  # fmt: skip
    assert verdicts == {"separable_adam": PASS, "separable_sgd": PASS, "adamw_beats_adam": PASS}
    assert (out / "heatmaps.png").stat().st_size > 0


def test_the_committed_quick_report_keeps_its_verdicts():
    """Pinned from results/adamw-quick (all 108 runs, 5 epochs each, 2026-12-05): at this
    scale neither basin is shown separable (the best decay's slope against lr is -0.5 or 0 for
    Adam with L2 and +0.5 or 0 for AdamW, a grid step either way) and AdamW's best cell is
    0.47 points behind Adam's: all three inconclusive. test_reproduce recomputes the statuses
    from runs.csv."""
    saved = json.loads((REPO / "results" / "adamw-quick" / "verdicts.json").read_text())
    claims = {
        c["key"]: (c["status"], round(c["mean"], 2), round(c["low"], 2), round(c["high"], 2),
                   c["n"])
        for c in saved["claims"]
    }  # fmt: skip
    assert claims == {
        "separable_adam": ("inconclusive", 0.17, -0.55, 0.88, 3),
        "separable_sgd": ("inconclusive", 0.0, -1.24, 1.24, 3),
        "adamw_beats_adam": ("inconclusive", -0.47, -1.53, 0.59, 3),
    }

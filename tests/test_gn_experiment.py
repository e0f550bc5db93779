"""The gn declaration (Wu & He 2018 / Qiao et al. 2019): its runs scale the lr with the batch,
and its checks and table read a synthetic runs.csv as intended."""

from __future__ import annotations

import pandas as pd
import pytest
from support import make_cfg

from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import FAIL, PASS
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.report import verdicts

PAPER = PAPERS["gn"]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_lr_is_scaled_linearly_with_the_batch(profile):
    prof = PAPER.profiles[profile]
    run = next(r for r in prof.runs if r.preset == "bn" and "batch_size=2" in r.overrides)
    cfg = make_cfg(f"+experiment=gn/{run.preset}", *prof.config, *run.overrides)
    assert cfg.batch_size == 2 and cfg.optimizer.lr == 0.1
    assert cfg.schedule.scale_lr_with_batch and cfg.schedule.reference_batch == 128
    assert cfg.normalization.name == "bn" and cfg.model.name == "resnet_cifar"


def write_csv(path, err: dict[tuple[str, int], float]) -> None:
    rows = [
        {"run_dir": f"runs/gn-quick/{p}/b{b}/seed0", "status": "completed", "epoch": 8,
         "test_acc": 100.0 - e, "train_loss": 1.0, "wall_seconds": 10.0}
        for (p, b), e in err.items()
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


def judged(tmp_path, err) -> dict[str, str]:
    write_csv(tmp_path / "runs.csv", err)
    res = results(PAPER, "quick", tmp_path, None, tmp_path / "runs.csv")
    return {c.key: v.status for c, v in verdicts(res)}


def test_the_papers_shape_passes_and_a_flat_bn_fails(tmp_path):
    shape = {("bn", 2): 45.0, ("bn", 8): 38.0, ("bn", 64): 35.0, ("gn", 2): 37.0,
             ("gn", 8): 36.5, ("gn", 64): 36.0, ("gn_ws", 2): 35.5, ("gn_ws", 8): 35.0,
             ("gn_ws", 64): 35.0, ("ln", 64): 39.0, ("in", 64): 41.0, ("ln", 2): 40.0,
             ("in", 2): 42.0}  # fmt: skip
    assert set(judged(tmp_path, shape).values()) == {PASS}
    flat = {**shape, ("bn", 2): 36.0, ("gn_ws", 2): 40.0}
    out = judged(tmp_path, flat)
    assert out["bn_small_batch"] == FAIL and out["ws_helps_gn"] == FAIL
    assert out["ws_matches_large_bn"] == FAIL and out["gn_beats_ln_in"] == PASS


def test_table_marks_the_unverified_paper_numbers(tmp_path):
    write_csv(tmp_path / "runs.csv", {("bn", 2): 45.0, ("bn", 64): 35.0})
    res = results(PAPER, "quick", tmp_path, None, tmp_path / "runs.csv")
    text = PAPER.table(res)
    assert "| BN (ours) | 45.00 | 35.00 |" in text
    assert text.count("**not verified**") == 2 and "23.72" in text and "10.6" in text

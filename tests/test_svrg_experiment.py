"""The svrg declaration (trainrepro/reproduce/papers/svrg.py): grid-point selection, the claims
and the report, from a tiny synthetic runs.csv of its quick runs."""

from __future__ import annotations

import json

import pandas as pd

from trainrepro.reproduce import report
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import FAIL, NOT_RUN, PASS
from trainrepro.reproduce.papers import PAPERS

PAPER = PAPERS["svrg"]
# Final test loss per folder (lower is better) and validation loss per point.
TEST_LOSS = {"lenet_sgd": 0.5, "lenet_adam": 0.45, "lenet_adagrad": 0.6, "lenet_svrg": 0.3,
             "lenet_storm": 0.35, "resnet18_bn_sgd": 1.0, "resnet18_bn_svrg": 1.5,
             "resnet18_none_sgd": 1.4, "resnet18_none_svrg": 1.45}  # fmt: skip
EVALS_PER_EPOCH = {"svrg": 2.5, "storm": 2.0, "metainit": 2.5}


def synthetic(path, lenet_vr: float | None = None) -> None:
    rows = []
    for run in PAPER.profiles["quick"].runs:
        folder, point, split, _ = run.path.split("/")
        opt = folder.rsplit("_", 1)[1]
        end = TEST_LOSS.get(folder, 1.0)
        if lenet_vr is not None and folder in ("lenet_svrg", "lenet_storm"):
            end = lenet_vr
        end += 0.01 * (run.seed - 2) * (1 if opt == "svrg" else -1)  # a spread over seeds
        # The point with the larger lr has the lower validation loss, by 0.1.
        val = 1.0 - 0.1 * (point == max(p.path.split("/")[1] for p in PAPER.profiles["quick"].runs
                                        if p.path.startswith(folder + "/")))  # fmt: skip
        for epoch in (1, 2, 3, 4):
            evals = 1000 * epoch * EVALS_PER_EPOCH.get(opt, 1)
            rows.append({
                "run_dir": f"runs/svrg-quick/{run.path}", "status": "completed", "epoch": epoch,
                "samples": 1000 * epoch, "grad_evals": evals,
                "test_loss": end + 500 / evals, "test_acc": 50.0 + epoch,
                "val_loss": None if split == "test" else val + (4 - epoch) * 0.1,
                "wall_seconds": 10.0 * epoch,
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


def load(tmp_path, **kw):
    synthetic(tmp_path / "runs.csv", **kw)
    return results(PAPER, "quick", tmp_path / "out", None, tmp_path / "runs.csv")


def test_selection_picks_the_lowest_mean_validation_loss(tmp_path):
    res = load(tmp_path)
    chosen = res.extras["selected"]
    assert chosen["lenet_sgd"]["point"] == "lr0.1" and chosen["lenet_sgd"]["folds"] == 2
    assert chosen["lenet_sgd"]["run_dir"] == "lenet_sgd/lr0.1/test/seed1"
    assert chosen["lenet_storm"]["point"] == "k1_c100"
    assert chosen["resnet18_bn_svrg"]["run_dir"] == "resnet18_bn_svrg/lr0.01/val/seed1"
    assert chosen["resnet18_bn_svrg"]["folds"] == 3  # the 5% split at three seeds
    assert sorted(chosen["lenet_sgd"]["run_dirs"]) == [1, 2, 3]
    assert chosen["lenet_sgd"]["run_dirs"][3] == "lenet_sgd/lr0.1/test/seed3"
    assert abs(chosen["lenet_adam"]["val_loss_mean"] - 0.9) < 1e-9
    saved = json.loads((tmp_path / "out" / "selected.json").read_text())
    assert saved.keys() == chosen.keys()


def test_claims_compare_at_equal_gradient_evaluations_over_seeds(tmp_path):
    verdicts = {c.key: c.verdict(load(tmp_path)) for c in PAPER.claims}
    assert verdicts["lenet_vr"].status == PASS, verdicts["lenet_vr"].detail
    assert "4,000 gradient evaluations" in verdicts["lenet_vr"].detail  # SGD's last count
    assert verdicts["lenet_vr"].interval.n == 3
    assert verdicts["bn_gap"].status == PASS, verdicts["bn_gap"].detail
    assert verdicts["bn_gap"].interval.n == 3
    assert verdicts["bn_gap_resnet101"].status == NOT_RUN
    assert "full profile" in verdicts["bn_gap_resnet101"].detail


def test_a_losing_lenet_claim_fails_at_quick_scale_too(tmp_path):
    """Retired rule: a quick-scale loss was once softened to "not shown at this scale"."""
    res = load(tmp_path, lenet_vr=5.0)
    claim = next(c for c in PAPER.claims if c.key == "lenet_vr")
    assert claim.verdict(res).status == FAIL


def test_one_seed_alone_is_inconclusive(tmp_path):
    synthetic(tmp_path / "runs.csv")
    df = pd.read_csv(tmp_path / "runs.csv")
    df[df["run_dir"].str.endswith("seed1")].to_csv(tmp_path / "one.csv", index=False)
    res = results(PAPER, "quick", tmp_path / "out", None, tmp_path / "one.csv")
    claim = next(c for c in PAPER.claims if c.key == "bn_gap")
    verdict = claim.verdict(res)
    assert verdict.status == "inconclusive" and "at least 3 seeds" in verdict.detail


def test_report_from_the_synthetic_csv(tmp_path):
    res = load(tmp_path)
    path = report.write(res, "trainrepro reproduce svrg --profile quick --from-csv x")
    text = path.read_text()
    assert "| lenet | SVRG | 2 | lr0.01 |" in text or "| lenet | SVRG | 2 | lr0.1 |" in text
    assert "split_test_set=true" in text
    for fig in PAPER.figures:
        assert (res.out / f"{fig.name}.png").stat().st_size > 0

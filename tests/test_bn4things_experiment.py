"""The bn4things declaration (Summers & Dinneen 2020): bn-alpha runs once per finished baseline
and combined run and is kept in bn_alpha.csv; the checks read seeds as intended; missing data is
said in one line before any run starts."""

from __future__ import annotations

import pandas as pd
from support import make_cfg

import trainrepro.analysis.bn_alpha
from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import NOT_SHOWN, PASS, Results
from trainrepro.reproduce.papers import PAPERS, bn4things
from trainrepro.reproduce.papers.bn4things_alpha import ALPHA_FILE, ALPHAS
from trainrepro.reproduce.report import verdicts

PAPER = PAPERS["bn4things"]


def test_quick_profile_is_cifar10_and_full_is_cifar100():
    run = PAPER.profiles["quick"].runs[0]
    quick = make_cfg(f"+experiment=bn4things/{run.preset}", *PAPER.profiles["quick"].config)
    full = make_cfg(f"+experiment=bn4things/{run.preset}")
    assert quick.dataset.name == "cifar10" and quick.dataset._target_.endswith(".cifar10")
    assert full.dataset.name == "cifar100" and full.dataset.val_fraction == 0.1
    to1 = next(r for r in PAPER.profiles["quick"].runs if r.path.startswith("wd_norm/to1"))
    cfg = make_cfg(f"+experiment=bn4things/{to1.preset}", *to1.overrides)
    assert cfg.optimizer.norm_decay_target == 1 and cfg.optimizer.decay_norm_and_bias


def test_full_profile_without_cifar100_stops_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAINREPRO_DATA", str(tmp_path / "data"))
    root = tmp_path / "runs"
    assert reproduce(["bn4things", "--profile", "full", "--runs-root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no CIFAR-100" in err[0] and "no run started" in err[0]
    assert not root.exists()
    assert reproduce(["bn4things", "--profile", "full", "--dry-run", "--runs-root", str(root)]) == 0
    assert capsys.readouterr().err.startswith("warning: bn4things --profile full: ")


def fake_report(run_dir, alphas, **_):
    seed = int(str(run_dir)[-1])
    return {"split": "val", "chosen_alpha": 0.1,
            "selection": [{"alpha": a, "acc": 50.0 + (a == 0.1), "loss": 1.0} for a in alphas],
            "test": {"before": {"alpha": 0.0, "acc": 60.0 + seed, "loss": 1.0},
                     "after": {"alpha": 0.1, "acc": 60.5 + seed, "loss": 0.9}}}  # fmt: skip


def test_prepare_runs_bn_alpha_once_and_keeps_the_rows(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainrepro.analysis.bn_alpha, "bn_alpha",
                        lambda d, a, **k: calls.append(d) or fake_report(d, a))  # fmt: skip
    runs = [f"baseline/b128/seed{s}" for s in range(3)] + ["wd_norm/to0/seed0"]
    for run in runs:
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "checkpoint.pt").write_bytes(b"")
    df = pd.DataFrame({"run_dir": runs, "preset": [r.split("/")[0] for r in runs],
                       "status": "completed", "epoch": 8, "test_acc": 60.0})  # fmt: skip
    out = tmp_path / "out"
    for _ in range(2):
        res = Results(PAPER, "quick", "bn4things-quick", df.copy(), tmp_path / "runs", out, "x")
        bn4things.prepare(res)
    assert len(calls) == 3  # the baseline seeds, once; wd_norm gets none
    assert len(pd.read_csv(out / ALPHA_FILE)) == 3 * len(ALPHAS)
    judged = {c.key: v for c, v in verdicts(res)}
    assert judged["ew_val"].status == PASS and judged["ew_test"].status == PASS
    assert "+0.50" in judged["ew_test"].detail


def test_bn_alpha_rows_of_a_redone_run_are_recomputed(tmp_path, monkeypatch):
    """Rows are tied to their checkpoint's SHA-256: re-running a run directory (a new
    checkpoint) recomputes its rows; the others are kept; rows from a file written before the
    digest column existed are recomputed where the checkpoint is present."""
    calls = []
    monkeypatch.setattr(trainrepro.analysis.bn_alpha, "bn_alpha",
                        lambda d, a, **k: calls.append(d) or fake_report(d, a))  # fmt: skip
    runs = [f"baseline/b128/seed{s}" for s in range(2)]
    for run in runs:
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "checkpoint.pt").write_bytes(run.encode())
    df = pd.DataFrame({"run_dir": runs, "preset": "baseline", "status": "completed",
                       "epoch": 8, "test_acc": 60.0})  # fmt: skip
    out = tmp_path / "out"

    def prepare() -> pd.DataFrame:
        bn4things.prepare(Results(PAPER, "quick", "q", df.copy(), tmp_path / "runs", out, "x"))
        return pd.read_csv(out / ALPHA_FILE)

    prepare()
    assert len(calls) == 2
    (tmp_path / "runs" / runs[1] / "checkpoint.pt").write_bytes(b"redone")
    rows = prepare()
    assert [str(c).rsplit("/", 2)[-2:] for c in calls[2:]] == [["b128", "seed1"]]
    assert len(rows) == 2 * len(ALPHAS) and rows["run_dir"].nunique() == 2
    rows.drop(columns="checkpoint_sha256").to_csv(out / ALPHA_FILE, index=False)
    prepare()
    assert len(calls) == 5
    # From runs.csv alone (no run directories) the saved rows are used as they are.
    res = Results(PAPER, "quick", "q", df.copy(), None, out, "x")
    bn4things.prepare(res)
    assert len(calls) == 5 and len(res.extras["alpha"]) == 2 * len(ALPHAS)


def test_seed_checks(tmp_path):
    rows = []

    def add(path, accs, val=50.0):
        for seed, acc in enumerate(accs):
            rows.append({"run_dir": f"runs/bn4things-quick/{path}/seed{seed}", "epoch": 8,
                         "status": "completed", "test_acc": acc, "val_acc": val})  # fmt: skip

    add("baseline/b128", [60.0, 60.5, 59.5])
    add("wd_norm/to0", [61.0, 61.5, 60.5])
    add("wd_norm/to1", [61.2, 61.3, 60.4])
    add("ghost_bn/ghost16", [65.0], val=55)
    add("ghost_bn/ghost32", [50.0], val=45)
    add("combined/ghost16", [60.2, 60.4, 59.9])
    add("gn_small/g4", [40.0], val=40)
    add("bgn_small/g4", [40.3], val=40)
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    res = results(PAPER, "quick", tmp_path, None, tmp_path / "runs.csv")
    judged = {c.key: v.status for c, v in verdicts(res)}
    assert judged["wd_gamma_target"] == PASS and judged["ghost_bn"] == PASS
    assert judged["combined"] == NOT_SHOWN and judged["bgn_small_batch"] == NOT_SHOWN
    assert judged["wd_gamma_beta"] == PASS
    assert "| ghost BN | ghost16 | 1 |" in PAPER.table(res)

"""Time to target and performance profiles (trainrepro/analysis/time_to_target.py), the
``scripts/collect.py --target`` flags, and the reports' time-to-target tables
(trainrepro/reproduce/speed.py), on hand-made runs with known crossings."""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from trainrepro.analysis.curves import collect
from trainrepro.analysis.time_to_target import (
    over_seeds,
    performance_profile,
    plot_profile,
    task_times,
    time_to_target,
)
from trainrepro.errors import ConfigError
from trainrepro.reproduce.data import results
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.report import write

REPO = Path(__file__).resolve().parent.parent
INF = math.inf


def write_run(run_dir: Path, accs, *, method="sgd", task="wrn", seed=0, val=None, batch=32):
    """An epoch per accuracy: 100 updates an epoch, 2 gradient evaluations per sample (as
    SVRG-like methods count), per-epoch train_seconds 1.5, 2.5, 3.0, ... (as metrics.csv)."""
    rows = [
        {"epoch": e, "updates": 100 * e, "samples": 100 * batch * e,
         "grad_evals": 200 * batch * e, "train_seconds": {1: 1.5, 2: 2.5}.get(e, 3.0),
         "wall_seconds": 4.0 * e, "test_acc": a, "val_acc": None if val is None else val[e - 1]}
        for e, a in enumerate(accs, start=1)
    ]  # fmt: skip
    run_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    cfg = {"seed": seed, "optimizer": {"name": method}, "model": {"name": task},
           "dataset": {"name": "cifar10"}}  # fmt: skip
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))


def test_first_crossing_in_every_unit_and_never_is_unsolved(tmp_path):
    write_run(tmp_path / "a", [50.0, 80.0, 92.0, 95.0])
    write_run(tmp_path / "b", [50.0, 90.0, 85.0, 91.0], seed=1)  # exactly at the target
    write_run(tmp_path / "c", [50.0, 60.0, 89.99, 70.0], seed=2)  # never
    per_run = time_to_target(collect([tmp_path]), 90.0).set_index("run_dir")
    a, b, c = (per_run.loc[str(tmp_path / n)] for n in "abc")
    assert a["metric"] == "test_acc" and a["target"] == 90.0 and a["reached"]
    assert (a["epoch_to_target"], a["updates_to_target"], a["samples_to_target"]) == (3, 300, 9600)
    assert a["grad_evals_to_target"] == 19_200
    # train_seconds is per epoch in metrics.csv: the training clock is its running sum.
    assert a["train_seconds_to_target"] == pytest.approx(1.5 + 2.5 + 3.0)
    assert a["wall_seconds_to_target"] == 12.0 and a["final_test_acc"] == 95.0
    assert b["reached"] and b["epoch_to_target"] == 2 and b["updates_to_target"] == 200
    assert not c["reached"] and c["best_test_acc"] == 89.99 and c["epochs"] == 4
    assert all(math.isnan(c[f"{k}_to_target"]) for k in ("epoch", "updates", "train_seconds"))
    assert c["optimizer.name"] == "sgd"  # config columns follow


def test_val_acc_when_every_run_has_it(tmp_path):
    write_run(tmp_path / "a", [95.0, 96.0], val=[80.0, 91.0])
    write_run(tmp_path / "b", [95.0, 96.0], val=[92.0, 93.0], seed=1)
    per_run = time_to_target(collect([tmp_path]), 90.0)
    assert set(per_run["metric"]) == {"val_acc"} and "final_val_acc" in per_run
    assert sorted(per_run["epoch_to_target"]) == [1, 2]
    write_run(tmp_path / "c", [95.0, 96.0], seed=2)  # no val split: test_acc for all, said
    with pytest.warns(UserWarning, match="val_acc in 2 of 3 runs"):
        assert set(time_to_target(collect([tmp_path]), 90.0)["metric"]) == {"test_acc"}


def test_over_seeds_counts_never_as_infinite():
    assert over_seeds([1.0, 2.0, math.nan]) == 2.0  # one of three never: the median is finite
    assert over_seeds([1.0, math.nan, math.nan]) == INF
    assert over_seeds([1.0, math.nan]) == INF  # half never: unsolved
    assert over_seeds([1.0, 3.0], "mean") == 2.0 and over_seeds([1.0, math.nan], "mean") == INF


def test_profile_of_two_methods_on_three_tasks():
    # A: fastest on t1, tied on t2, never solves t3; B: twice A's time on t1, alone on t3.
    times = pd.DataFrame({"t1": [10.0, 20.0], "t2": [10.0, 10.0], "t3": [INF, 40.0]},
                         index=["A", "B"])  # fmt: skip
    profile = performance_profile(times, [1.0, 1.5, 2.0, 1e6])
    assert profile["A"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert profile["B"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    # A task no method solves still counts in every method's denominator.
    times["t4"] = INF
    assert performance_profile(times, [1e6])["B"].iloc[0] == pytest.approx(3 / 4)


def test_task_times_over_seeds_from_runs(tmp_path):
    # adam: 1 epoch on wrn at both seeds, never on resnet at two of three seeds (unsolved);
    # sgd: 2 and 4 epochs on wrn (median 3), 3 epochs on resnet.
    for seed, accs in enumerate(([95.0], [95.0])):
        write_run(tmp_path / f"adam_wrn{seed}", accs, method="adam", seed=seed)
    for seed, accs in enumerate(([95.0, 50.0], [50.0, 60.0], [50.0, 60.0])):
        write_run(tmp_path / f"adam_resnet{seed}", accs, method="adam", task="resnet", seed=seed)
    for seed, accs in enumerate(([50.0, 95.0], [50.0, 60.0, 70.0, 95.0])):
        write_run(tmp_path / f"sgd_wrn{seed}", accs, seed=seed)
    write_run(tmp_path / "sgd_resnet0", [50.0, 60.0, 95.0], task="resnet")
    per_run = time_to_target(collect([tmp_path]), 90.0)
    times = task_times(per_run, method_keys="optimizer.name",
                       task_keys="model.name,dataset.name", time="epochs")  # fmt: skip
    assert list(times.index) == ["optimizer.name=adam", "optimizer.name=sgd"]
    wrn, resnet = "model.name=wrn, dataset.name=cifar10", "model.name=resnet, dataset.name=cifar10"
    assert times.loc["optimizer.name=adam", wrn] == 1.0
    assert times.loc["optimizer.name=sgd", wrn] == 3.0
    assert times.loc["optimizer.name=adam", resnet] == INF
    assert times.loc["optimizer.name=sgd", resnet] == 3.0
    profile = performance_profile(times, [1.0, 3.0])
    assert profile["optimizer.name=adam"].tolist() == [0.5, 0.5]
    assert profile["optimizer.name=sgd"].tolist() == [0.5, 1.0]
    updates = task_times(per_run, method_keys=["optimizer.name"], time="updates", agg="mean")
    # Means over every run of a method (one task): adam has a never, so inf; sgd 200, 400, 300.
    assert updates.iloc[:, 0].tolist() == [INF, 300.0]
    with pytest.raises(ConfigError, match="not columns"):
        task_times(per_run, method_keys="optimizer.nam")
    out = plot_profile(times, tmp_path / "profile")
    assert out.suffix == ".png" and out.stat().st_size > 0


def _collect_script():
    spec = importlib.util.spec_from_file_location("collect_script", REPO / "scripts/collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_collect_script_target_flags(tmp_path, capsys):
    main = _collect_script()
    runs = tmp_path / "runs"
    write_run(runs / "sgd0", [50.0, 95.0])
    write_run(runs / "adam0", [95.0, 96.0], method="adam")
    write_run(runs / "adam1", [50.0, 60.0], method="adam", seed=1)  # never: unsolved
    assert main([str(runs), "-o", str(tmp_path / "plain.csv")]) == 0
    plot = tmp_path / "fig" / "profile.png"
    args = [str(runs), "-o", str(tmp_path / "all.csv"), "--target", "90", "--method-key",
            "optimizer.name", "--task-key", "model.name,dataset.name", "--time", "updates",
            "--profile-plot", str(plot)]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "test_acc >= 90: reached by 2 of 3 runs (1 unsolved)" in said
    # The tidy CSV is the one written without --target; the per-run table is beside it.
    assert (tmp_path / "all.csv").read_text() == (tmp_path / "plain.csv").read_text()
    per_run = pd.read_csv(tmp_path / "all.time_to_target.csv").set_index("run_dir")
    assert per_run.loc[str(runs / "sgd0"), "updates_to_target"] == 200
    assert per_run.loc[str(runs / "adam0"), "updates_to_target"] == 100
    assert not per_run.loc[str(runs / "adam1"), "reached"]
    assert "optimizer.name=adam: solved 0 of 1" in said  # median of 100 and never: never
    assert plot.stat().st_size > 0
    # Without -o, stdout holds the per-run table (one CSV on stdout).
    assert main([str(runs), "--target", "99"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("run_dir,status,metric,target,reached,epoch_to_target")
    assert "reached by 0 of 3 runs" in printed.err
    with pytest.raises(SystemExit):
        main([str(runs), "--profile-plot", str(plot)])  # needs --target and --method-key
    assert main([str(runs), "--target", "90", "--method-key", "nope"]) == 2
    assert "error: method_key/task_key=" in capsys.readouterr().err


# ------------------------------------------------------------------ the reports' tables
def _clr_rows(preset: str, seed: int, accs: list[float]) -> list[dict]:
    return [
        {"run_dir": f"runs/clr-quick/{preset}/seed{seed}", "status": "completed",
         "epoch": e, "updates": 100 * e, "samples": 10_000 * e, "grad_evals": 10_000 * e,
         "lr": 0.001, "train_loss": 1.0, "test_loss": 1.0, "test_acc": a,
         "train_seconds": 2.0, "wall_seconds": 3.0 * e, "seed": seed, "batch_size": 100}
        for e, a in enumerate(accs, start=1)
    ]  # fmt: skip


def test_clr_report_times_every_schedule_against_the_fixed_rate(tmp_path):
    # Fixed ends at 60 and 62 (target: their mean, 61); triangular reaches 61 at epochs 2 and
    # 3 (median 2.5 epochs, 250 updates); step at epoch 4 for one seed of two: never.
    rows = _clr_rows("fixed", 0, [40.0, 50.0, 55.0, 60.0])
    rows += _clr_rows("fixed", 1, [40.0, 50.0, 55.0, 62.0])
    rows += _clr_rows("triangular", 0, [50.0, 61.0, 62.0, 63.0])
    rows += _clr_rows("triangular", 1, [50.0, 58.0, 61.5, 63.0])
    rows += _clr_rows("step", 0, [40.0, 50.0, 58.0, 61.0])
    rows += _clr_rows("step", 1, [40.0, 50.0, 58.0, 60.0])
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    # The report itself, without the figures (matplotlib's time, not this table's).
    paper, out = replace(PAPERS["clr"], figures=()), tmp_path / "out"
    write(results(paper, "quick", out, None, tmp_path / "runs.csv"), "test")
    report = (out / "REPORT.md").read_text()
    section = report.split("## Time to target\n", 1)[1].split("## Figures", 1)[0]
    assert "| fixed lr | 61.00 | 1/2 | never | never | never | never | never |" in section
    assert "| CLR triangular | 61.00 | 2/2 | 2.5 | 250 | 25,000 | 5.0 | 1.00 |" in section
    assert "| step decay | 61.00 | 1/2 | never |" in section
    assert "CLR triangular2" not in section  # no runs: no row
    assert "mean over its 2 completed runs (61.00%)" in section
    assert report.index("## Table") < report.index("## Time to target") < report.index("## Figures")
    assert "Time to target" not in (out / "table.md").read_text()  # table.md is unchanged


def test_smith18_table_uses_the_lowest_schedule_level_and_sgdr_epochs(tmp_path):
    rows = []
    finals = {"momentum_decay_lr": 70.0, "momentum_hybrid": 69.0, "momentum_increase_batch": 68.0}
    for i, (preset, final) in enumerate(finals.items()):
        for e in range(1, 5):  # updates fall with the batch: 400, 200, 100 an epoch
            rows.append({"run_dir": f"runs/smith18-quick/{preset}/seed0", "status": "completed",
                         "epoch": e, "updates": 400 * e // 2**i, "test_acc": final - 4 + e,
                         "seed": 0, "preset": preset})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    res = results(PAPERS["smith18"], "quick", tmp_path, None, tmp_path / "runs.csv")
    text = "\n".join(PAPERS["smith18"].time_to_target(res))
    # Target 68 (increase_batch's): decay_lr at epoch 2 (800), hybrid at 3 (600), inc. at 4.
    assert "| decay_lr (SGD with momentum) | 68.00 | 1/1 | 2 | 800 | — | — | 2.00 |" in text
    assert "| increase_batch (SGD with momentum) | 68.00 | 1/1 | 4 | 400 | — | — | 1.00 |" in text
    assert "SGD with momentum 68.00% (increase_batch)" in text
    # SGDR: the better step schedule's mean final accuracy (80, lr 0.1), in epochs.
    rows = []
    for preset, accs in {"step_lr0.1": [60.0, 70.0, 75.0, 80.0], "step_lr0.05": [60, 70, 75, 78],
                         "sgdr_t0_1": [70.0, 81.0, 79.0, 82.0]}.items():  # fmt: skip
        rows += [{"run_dir": f"runs/sgdr-quick/{preset}/cifar10/seed0", "status": "completed",
                  "epoch": e, "updates": 10 * e, "test_acc": a}
                 for e, a in enumerate(accs, start=1)]  # fmt: skip
    (tmp_path / "sgdr").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "sgdr" / "runs.csv", index=False)
    res = results(PAPERS["sgdr"], "quick", tmp_path / "sgdr", None, tmp_path / "sgdr" / "runs.csv")
    text = "\n".join(PAPERS["sgdr"].time_to_target(res))
    assert "| step, lr 0.1, cifar10 | 80.00 | 1/1 | 4 | 40 | — | — | 2.00 |" in text
    assert "| SGDR T_0 = 1, T_mult = 2, cifar10 | 80.00 | 1/1 | 2 | 20 | — | — | 1.00 |" in text
    assert "| step, lr 0.05, cifar10 | 80.00 | 0/1 | never |" in text
    assert "cifar10 80.00% (step, lr 0.1)" in text

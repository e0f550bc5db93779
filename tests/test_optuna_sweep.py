"""Optuna search (``-m hparams_search=lr_wd``, the `sweep` extra): trials inside the search space,
each returning its run's final validation accuracy, and a named study that the same command
continues. Skipped without hydra-optuna-sweeper."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from support import cli

from trainrepro.engine.objective import WORST, objective

# 2 updates of a tiny WRN; a quarter of the 128 training images held out for validation.
RUN = [
    "hparams_search=lr_wd",
    "dataset=synthetic",
    "dataset.num_train=128",
    "dataset.num_test=64",
    "dataset.val_fraction=0.25",
    "model=wrn",
    "model.depth=10",
    "model.width=1",
    "schedule=constant",
    "epochs=1",
    "batch_size=48",
    "eval_batch_size=128",
    "device=cpu",
    "progress=false",
]


def last_row(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def test_study_returns_val_accuracy_and_continues_when_rerun(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the `sweep` extra")
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "lr_wd"
    command = ["-m", *RUN, f"hydra.sweep.dir={sweep}"]

    first = cli(*command, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{sweep}/optuna.db")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2]
    for trial in trials:
        lr, wd = trial.params["optimizer.lr"], trial.params["optimizer.weight_decay"]
        assert 1e-4 <= lr <= 1.0 and 1e-6 <= wd <= 1e-2
        run_dir = sweep / str(trial.number)  # trial N runs in folder N
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["optimizer"]["lr"] == lr and config["optimizer"]["weight_decay"] == wd
        assert trial.value == float(last_row(run_dir)["val_acc"])
    assert first.stdout.count("returned to the sweeper: val_acc=") == 3
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(t.value for t in trials)
    before = {t.number: (sweep / str(t.number) / "metrics.csv").read_bytes() for t in trials}

    # The same command with a larger total continues the study: 2 new trials, old runs kept.
    again = cli(*command, "hydra.sweeper.n_trials=5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "study lr_wd has 3 trials; 2 to go" in again.stdout
    trials = optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{sweep}/optuna.db").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all((sweep / str(n) / "metrics.csv").read_bytes() == b for n, b in before.items())
    for trial in trials[3:]:
        assert trial.value == float(last_row(sweep / str(trial.number))["val_acc"])
    new = [(t.params["optimizer.lr"], t.params["optimizer.weight_decay"]) for t in trials]
    assert len(set(new)) == 5  # the reseeded sampler drew new points

    # Another fixed override would mix incomparable trials: refused before anything runs.
    other = cli(*command, "hydra.sweeper.n_trials=6", "seed=1", cwd=tmp_path)
    assert other.returncode == 2
    assert other.stderr.startswith("error: seed=1: differs from the study"), other.stderr
    assert not (sweep / "5").exists()


def write_run(run_dir, status, val_acc):
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text(f"epoch,test_acc,val_acc\n1,50.0,{val_acc}\n")
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "diverged_at_update": 7}))


def test_objective_is_val_then_test_accuracy_and_worst_for_a_diverged_run(tmp_path):
    write_run(tmp_path / "val", "completed", "61.5")
    assert objective(tmp_path / "val") == (61.5, "val_acc=61.5 (final, epoch 1)")
    write_run(tmp_path / "test", "completed", "")
    assert objective(tmp_path / "test")[0] == 50.0
    assert objective(tmp_path / "test")[1].startswith("test_acc=50")
    write_run(tmp_path / "diverged", "diverged", "10.0")
    value, text = objective(tmp_path / "diverged")
    assert value == WORST and "diverged at update 7" in text

"""The command line end to end: a run, a sweep, divergence, and every kind of bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support import TINY, cli

from trainrepro.engine.records import METRIC_COLUMNS

TINY_CLI = [o for o in TINY if not o.startswith("epochs")] + ["epochs=1"]


def test_run_writes_its_evidence(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(*TINY_CLI, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert len(metrics) == 1 and metrics["updates"].iloc[0] == 512 // 64
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["diverged"] is False
    assert {"torch", "python", "trainrepro"} <= set(summary["versions"])
    assert summary["git"]["commit"]
    assert "cpu" in summary["device"]
    config = (run_dir / "config.yaml").read_text()
    assert "_target_: trainrepro.models" in config and "${" not in config
    assert (run_dir / "checkpoint.pt").stat().st_size > 0


def test_sweep_survives_a_diverged_job(tmp_path):
    result = cli(
        "-m",
        *TINY_CLI,
        "normalization=none",
        "optimizer.lr=1e12,0.05",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    diverged = json.loads((tmp_path / "sweep/0/summary.json").read_text())
    completed = json.loads((tmp_path / "sweep/1/summary.json").read_text())
    assert diverged["diverged"] is True and diverged["status"] == "diverged"
    assert diverged["diverged_at_update"] >= 1
    assert completed["status"] == "completed"


BAD_INPUTS = {
    "unknown model option": (
        ["model=vgg"],
        "model=vgg",
        "valid: lenet5, mobilenetv2, nf_resnet, resnet, resnet_cifar, wrn",
    ),
    "unknown optimizer option": (["optimizer=lion"], "optimizer=lion", "valid: adadelta"),
    "unknown schedule in a sweep": (["-m", "schedule=cosine,linear"], "schedule=linear", "valid:"),
    "negative learning rate": (["optimizer.lr=-0.1"], "optimizer.lr=-0.1", "> 0"),
    "zero learning rate": (["optimizer.lr=0"], "optimizer.lr=0", "> 0"),
    "zero batch size": (["batch_size=0"], "batch_size=0", "positive"),
    "negative batch size": (["batch_size=-8"], "batch_size=-8", "positive"),
    "gn groups not dividing": (
        ["normalization=gn", "normalization.groups=5"],
        "normalization.groups=5",
        "divide",
    ),
    "unknown key": (["model.depht=10"], "model.depht", ""),
    "unknown added key": (["+model.depht=10"], "model.depht", "valid:"),
    "bad device": (["device=tpu"], "device=tpu", "auto, cpu, cuda"),
    "fp16 on cpu": (["precision=fp16"], "precision=fp16", "CUDA"),
    "channels_last not a bool": (["channels_last=maybe"], "channels_last=maybe", "true or false"),
    "ghost size not dividing the batch": (
        ["normalization=ghost_bn", "normalization.ghost_batch_size=48"],
        "normalization.ghost_batch_size=48",
        "does not divide the batch size 64",
    ),
    "micro-batch splitting ghost batches": (
        ["normalization=ghost_bn", "normalization.ghost_batch_size=16", "max_micro_batch=24"],
        "max_micro_batch=24",
        "multiple of normalization.ghost_batch_size=16",
    ),
    "zero micro-batch": (["max_micro_batch=0"], "max_micro_batch=0", "positive"),
    "batch scaling without its reference": (
        ["schedule.scale_batch_with=[lr]"],
        "schedule.reference_lr=None",
        "required with scale_batch_with lr",
    ),
    "plan in a sweep": (["-m", "seed=0,1", "+plan=true"], "plan=True", "drop -m"),
    "plan not a bool": (["+plan=maybe"], "plan=maybe", "true or false"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_input_one_line_no_traceback_nothing_written(tmp_path, case):
    args, key_value, reason = case
    run_dir = tmp_path / "run"
    result = cli(
        *TINY_CLI, *args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and key_value in lines[0] and reason in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()


def test_missing_dataset_names_the_root(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    result = cli(
        *[o for o in TINY_CLI if not o.startswith("dataset")],
        "dataset=cifar10",
        f"dataset.root={empty}",
        "dataset.download=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: dataset.root={empty}") and "\n" not in line
    assert not run_dir.exists() and not any(empty.iterdir())


def _readme_error_examples() -> list[tuple[str, str]]:
    """``$ python -m trainrepro <args>`` lines of the README followed by an ``error:`` line."""
    from support import REPO

    lines = (REPO / "README.md").read_text().splitlines()
    prefix = "$ python -m trainrepro "
    return [
        (line[len(prefix):], nxt)
        for line, nxt in zip(lines, lines[1:], strict=False)
        if line.startswith(prefix) and nxt.startswith("error:")
    ]


@pytest.mark.parametrize("args, expected", _readme_error_examples())
def test_readme_error_examples_are_what_the_cli_prints(args, expected, tmp_path):
    """The README shows real output: a new model or a reworded message fails here."""
    result = cli(*args.split(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == expected


def test_the_readme_has_error_examples():
    assert len(_readme_error_examples()) >= 2

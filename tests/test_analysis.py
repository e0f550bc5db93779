"""Tests for trainrepro.analysis.curves and its scripts, on fake run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from trainrepro.analysis.curves import (
    aggregate_curves,
    collect,
    default_group_keys,
    find_runs,
    flatten_config,
    load_run,
    plot_curves,
)
from trainrepro.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3


def _config(optimizer: str, seed: int, batch_size: int, lr: float) -> dict:
    opt = {"name": optimizer, "_target_": f"trainrepro.optim.factory.{optimizer}", "lr": lr}
    if optimizer == "sgd":
        opt["momentum"] = 0.9
    return {
        "epochs": EPOCHS,
        "seed": seed,
        "device": "cpu",
        "batch_size": batch_size,
        "eval_batch_size": 1000,
        "precision": "fp32",
        "resume": None,
        "progress": False,
        "model": {"name": "wrn", "_target_": "trainrepro.models.wrn.build_wrn", "depth": 16},
        "normalization": {"name": "bn", "_target_": "trainrepro.norms.factory.batch_norm"},
        "optimizer": opt,
        "schedule": {"name": "step", "_target_": "x.step", "milestones": [60, 120, 160]},
        "dataset": {"name": "cifar10", "_target_": "x.cifar10", "root": f"/data/{seed}"},
    }


def _write_run(
    run_dir: Path,
    optimizer: str,
    seed: int,
    *,
    batch_size: int = 128,
    lr: float = 0.1,
    status: str | None = "completed",
    epochs: int = EPOCHS,
) -> None:
    run_dir.mkdir(parents=True)
    steps = 1024 // batch_size
    base = 50.0 if optimizer == "sgd" else 40.0
    epoch = np.arange(1, epochs + 1)
    metrics = pd.DataFrame(
        {
            "epoch": epoch,
            "updates": epoch * steps,
            "samples": epoch * steps * batch_size,
            "grad_evals": epoch * steps * batch_size,
            "lr": lr,
            "batch_size": batch_size,
            "momentum": 0.9,
            "noise_scale": 1.0,
            "train_loss": 2.0 / epoch + seed,
            "train_acc": base + 5 * epoch + 2 * seed,
            "test_loss": 2.5 / epoch + seed,
            "test_acc": base + 10 * epoch + 2 * seed,
            "val_loss": np.nan,
            "val_acc": np.nan,
            "epoch_seconds": 1.0,
            "wall_seconds": epoch * (1.0 + 0.1 * seed),
        }
    )
    if status == "diverged":
        metrics.loc[metrics.index[-1], ["train_loss", "test_loss"]] = [np.inf, np.nan]
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    OmegaConf.save(
        OmegaConf.create(_config(optimizer, seed, batch_size, lr)), run_dir / "config.yaml"
    )
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"job": 1}}), run_dir / ".hydra" / "config.yaml")
    if status is not None:
        final = metrics.iloc[-1].to_dict()
        summary = {"status": status, "diverged": status == "diverged", "final": final}
        (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """A Hydra multirun (sgd/adam x 2 seeds, jobs 0..3 plus job 10) and a single diverged run."""
    root = tmp_path / "runs"
    multi = root / "multirun" / "2024-01-01" / "12-00-00"
    for job, (opt, seed) in enumerate([("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1)]):
        _write_run(multi / str(job), opt, seed, batch_size=128 if opt == "sgd" else 256)
    (multi / "multirun.yaml").write_text("hydra: {}\n")
    _write_run(multi / "10", "sgd", 2, status=None)  # still running: no summary.json
    _write_run(root / "single", "sgd", 0, lr=1.0, status="diverged", epochs=2)
    return root


def test_find_runs_recursive_sorted_dedup(runs: Path) -> None:
    found = find_runs([runs, runs / "single", str(runs / "multirun" / "*" / "*" / "1")])
    names = [p.relative_to(runs).as_posix() for p in found]
    prefix = "multirun/2024-01-01/12-00-00/"
    assert names == [prefix + j for j in ("0", "1", "2", "3", "10")] + ["single"]
    assert find_runs([runs / "single" / "metrics.csv"]) == [runs / "single"]


def test_find_runs_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run directory"):
        find_runs([tmp_path])
    with pytest.raises(ConfigError, match="no such file"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="glob matches nothing"):
        find_runs([str(tmp_path / "nope*")])


def test_flatten_config() -> None:
    flat = flatten_config(_config("sgd", 3, 128, 0.1))
    assert flat["optimizer.lr"] == 0.1
    assert flat["optimizer.name"] == "sgd"
    assert flat["schedule.milestones"] == "[60, 120, 160]"
    assert flat["seed"] == 3 and flat["resume"] is None
    assert not any("_target_" in k for k in flat)
    assert flatten_config(OmegaConf.create({"a": {"b": [1, 2]}})) == {"a.b": "[1, 2]"}


def test_load_run(runs: Path) -> None:
    df = load_run(runs / "single")
    assert len(df) == 2 and set(df["status"]) == {"diverged"}
    assert (df["optimizer.lr"] == 1.0).all()
    # The config's batch_size must not overwrite the per-epoch metrics column.
    assert "config.batch_size" in df.columns and "batch_size" in df.columns
    assert "config.batch_size" in df.attrs["config_columns"]
    assert "epoch" not in df.attrs["config_columns"]


def test_collect_columns_and_rows(runs: Path) -> None:
    df = collect([runs])
    assert df["run_dir"].nunique() == 6
    assert len(df) == 5 * EPOCHS + 2
    expected = {"run_dir", "status", "epoch", "test_acc", "val_acc", "optimizer.name", "seed"}
    assert expected <= set(df.columns)
    assert "optimizer.momentum" in df.columns  # union: adam runs have NaN there
    assert df.loc[df["optimizer.name"] == "adam", "optimizer.momentum"].isna().all()
    statuses = df.groupby("run_dir")["status"].first().value_counts().to_dict()
    assert statuses == {"completed": 4, "running": 1, "diverged": 1}


def test_runs_without_rows_are_skipped(runs: Path) -> None:
    (runs / "fresh").mkdir()
    header = (runs / "single" / "metrics.csv").read_text().splitlines()[0]
    (runs / "fresh" / "metrics.csv").write_text(header + "\n")
    (runs / "fresh" / "config.yaml").write_text((runs / "single" / "config.yaml").read_text())
    with pytest.warns(UserWarning, match="without metrics rows yet"):
        df = collect([runs])
    assert df["run_dir"].nunique() == 6
    # The empty run's object-dtype columns must not leak into the numbers.
    assert pd.api.types.is_numeric_dtype(df["test_acc"])


def test_default_groups_and_seed_mean(runs: Path) -> None:
    df = collect([runs / "multirun"])
    keys = default_group_keys(df)
    # seed and dataset.root differ too, but are not experimental conditions; momentum
    # differs only because optimizer.name does.
    assert keys == ["config.batch_size", "optimizer.name"]
    keys = default_group_keys(collect([runs]))
    assert keys == ["config.batch_size", "optimizer.name", "optimizer.lr"]
    agg = aggregate_curves(df, metrics=["test_acc", "train_loss"], group_by=["optimizer.name"])
    assert set(agg["group"]) == {"optimizer.name=adam", "optimizer.name=sgd"}
    adam = agg[(agg["group"] == "optimizer.name=adam") & (agg["metric"] == "test_acc")]
    # seeds 0, 1 add 0 and 2 points: mean = 40 + 10 * epoch + 1, spread 2.
    assert adam["mean"].tolist() == [51.0, 61.0, 71.0]
    assert (adam["max"] - adam["min"]).tolist() == [2.0, 2.0, 2.0]
    assert adam["n"].tolist() == [2, 2, 2] and set(adam["runs"]) == {2}
    sgd = agg[(agg["group"] == "optimizer.name=sgd") & (agg["metric"] == "test_acc")]
    assert sgd["mean"].tolist() == pytest.approx([60 + 2 / 3 * 3, 70 + 2, 80 + 2])  # seeds 0,1,2


def test_x_is_mean_over_runs_at_each_epoch(runs: Path) -> None:
    df = collect([runs / "multirun"])
    agg = aggregate_curves(df, x="wall_seconds", metrics=["test_acc"], group_by=["optimizer.name"])
    adam = agg[agg["group"] == "optimizer.name=adam"]
    assert adam["x"].tolist() == pytest.approx([1.05, 2.1, 3.15])
    agg = aggregate_curves(df, x="updates", metrics=["test_acc"], group_by=["optimizer.name"])
    assert agg.loc[agg["group"] == "optimizer.name=adam", "x"].tolist() == [4, 8, 12]


def test_diverged_run_drops_non_finite(runs: Path) -> None:
    df = collect([runs / "single"])
    agg = aggregate_curves(df, metrics=["train_loss", "test_acc"], group_by=["optimizer.lr"])
    assert agg.loc[agg["metric"] == "train_loss", "epoch"].tolist() == [1]
    assert agg.loc[agg["metric"] == "test_acc", "epoch"].tolist() == [1, 2]
    assert set(agg["group"]) == {"optimizer.lr=1"}


@pytest.mark.parametrize("x", ["epoch", "updates"])
def test_plot_files(runs: Path, tmp_path: Path, x: str) -> None:
    df = collect([runs])
    out = tmp_path / "results" / "deep" / f"curves_{x}.png"
    paths = plot_curves(df, x=x, out=out, logx=x == "updates", title="demo")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert paths[0] == out


def test_plot_std_band_and_odd_metric_count(runs: Path, tmp_path: Path) -> None:
    df = collect([runs])
    metrics = ["test_acc", "train_loss", "val_acc"]  # val_acc is all NaN: "no data" panel
    paths = plot_curves(
        df, metrics=metrics, group_by=["optimizer.name"], out=tmp_path / "c", band="std", logx=True
    )
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bad_columns(runs: Path, tmp_path: Path) -> None:
    df = collect([runs])
    with pytest.raises(ConfigError, match=r"group_by=\[optimizer.nam\].*optimizer.name"):
        plot_curves(df, group_by=["optimizer.nam"], out=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"metrics=\[test_accc\].*test_acc"):
        plot_curves(df, metrics=["test_accc"], out=tmp_path / "c")
    with pytest.raises(ConfigError, match="x=optimizer.lr"):
        plot_curves(df, x="optimizer.lr", out=tmp_path / "c")
    assert not (tmp_path / "c.png").exists()


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "scripts" / name), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_collect_cli(runs: Path, tmp_path: Path) -> None:
    res = _script("collect.py", "runs", "-o", "out/all.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "17 rows from 6 runs" in res.stdout
    df = pd.read_csv(tmp_path / "out" / "all.csv")
    assert len(df) == 17 and "optimizer.lr" in df.columns
    res = _script("collect.py", str(runs / "single"), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("run_dir,status,epoch")
    assert "2 rows from 1 runs" in res.stderr
    res = _script("collect.py", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: runs=")


def test_plot_cli(runs: Path, tmp_path: Path) -> None:
    args = ["--x", "updates", "--group-by", "optimizer.name", "--metrics", "test_acc,train_loss"]
    res = _script("plot_curves.py", "runs", *args, "--out", "res/x/curves", "--logx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "res" / "x" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "res" / "x" / "curves.pdf").stat().st_size > 1000
    res = _script("plot_curves.py", "runs", "--group-by", "bogus", "--out", "c", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "group_by=[bogus]" in lines[0] and "optimizer.name" in lines[0]
    res = _script("plot_curves.py", "runs", "--metrics", "acc", "--out", "c", cwd=tmp_path)
    assert res.returncode == 2 and "metrics=[acc]" in res.stderr

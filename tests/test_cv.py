"""k-fold cross-validation: the data layer's folds and the ``trainrepro cv`` command."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from support import REPO, TINY_MODEL, cli, tiny_cfg

from trainrepro.analysis.cv import grid_points, parse_grid, point_name, select, summarize
from trainrepro.data.splits import check_folds, stratified_folds
from trainrepro.engine.build import build_run
from trainrepro.errors import ConfigError


def test_stratified_folds_partition_the_set_with_class_proportions():
    labels = torch.tensor([0] * 40 + [1] * 20 + [2] * 12)
    assignment = stratified_folds(labels, 4)
    assert torch.equal(assignment, stratified_folds(labels, 4))  # fixed seed
    sizes = torch.bincount(assignment, minlength=4)
    assert sizes.sum() == len(labels) and sizes.max() - sizes.min() <= 1
    for k in range(4):
        counts = torch.bincount(labels[assignment == k], minlength=3)
        assert counts.tolist() == [10, 5, 3]


def test_fold_k_is_the_validation_split_and_the_rest_is_trained_on():
    runs = [build_run(tiny_cfg("dataset.folds=4", f"dataset.fold={k}")) for k in range(4)]
    n = 512
    for run in runs:
        assert len(run.data.train) + len(run.data.val) == n
        assert len(run.data.val) == n // 4
        assert any("folds=4" in note for note in run.data.notes)
    # The validation folds are disjoint and cover the training split.
    vals = torch.cat([r.data.val.images.flatten(1) for r in runs])
    assert len(torch.unique(vals, dim=0)) == n


@pytest.mark.parametrize(
    ("folds", "fold", "val_fraction", "key"),
    [(1, 0, 0.0, "dataset.folds"), (4, 4, 0.0, "dataset.fold"), (None, 1, 0.0, "dataset.fold"),
     (4, 0, 0.1, "dataset.val_fraction"), (4, None, 0.0, "dataset.fold")],
)  # fmt: skip
def test_bad_fold_keys_name_the_key(folds, fold, val_fraction, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        check_folds(folds, fold, val_fraction)


def test_grid_parsing_points_and_names():
    grid = [parse_grid("optimizer.lr=0.1,0.01"), parse_grid("optimizer.c=10")]
    points = grid_points(grid)
    assert points == [
        ("optimizer.lr=0.1", "optimizer.c=10"),
        ("optimizer.lr=0.01", "optimizer.c=10"),
    ]
    assert point_name(points[0]) == "lr0.1_c10"
    for bad in ("optimizer.lr", "optimizer.lr=", "dataset.fold=1,2"):
        with pytest.raises(ConfigError, match="^--grid="):
            parse_grid(bad)


def _write_fold(root, point, k, status, value):
    d = root / point / f"fold{k}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": status, "final": {"val_loss": value}}))


def test_summary_and_selection_skip_points_with_a_failed_fold(tmp_path):
    points = [("optimizer.lr=0.1",), ("optimizer.lr=0.01",), ("optimizer.lr=1",)]
    for k, (a, b) in enumerate([(0.5, 0.7), (0.7, 0.9)]):
        _write_fold(tmp_path, "lr0.1", k, "completed", a)
        _write_fold(tmp_path, "lr0.01", k, "completed", b)
    _write_fold(tmp_path, "lr1", 0, "completed", 0.1)
    _write_fold(tmp_path, "lr1", 1, "diverged", None)
    table = summarize(tmp_path, points, 2, "val_loss")
    assert table["mean"].round(6).tolist()[:2] == [0.6, 0.8]
    assert table.loc[2, "diverged"] == 1
    assert select(table, "val_loss")["point"] == "lr0.1"  # lr1 is lower but lost a fold
    assert select(table.assign(mean=-table["mean"]), "val_acc")["point"] == "lr0.1"


def test_cv_command_runs_selects_trains_final_and_continues(tmp_path):
    root = tmp_path / "cv"
    args = [
        "cv", "dataset=synthetic", "dataset.num_train=192", "dataset.num_test=64", *TINY_MODEL,
        "schedule=constant", "epochs=1", "batch_size=32", "eval_batch_size=64", "device=cpu",
        "optimizer=sgd", "--grid", "optimizer.lr=0.05,0.5", "--folds", "2", "--root", str(root),
    ]  # fmt: skip
    first = cli(*args, cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    table = pd.read_csv(root / "cv.csv")
    assert table["point"].tolist() == ["lr0.05", "lr0.5"]
    assert (table["completed"] == 2).all()
    selected = json.loads((root / "selected.json").read_text())
    best = table.loc[table["mean"].idxmin(), "overrides"]
    assert selected["selected"] == [best] and selected["folds"] == 2
    assert selected["final"]["test_loss"] is not None
    final_cfg = (root / "final" / "config.yaml").read_text()
    assert "folds: null" in final_cfg  # trained on the whole training split
    again = cli(*args, cwd=REPO)
    assert again.returncode == 0
    assert again.stdout.count("done, kept") == 5 and "started" not in again.stdout


def test_cv_command_refuses_fold_keys_and_bad_grids(tmp_path):
    bad = cli("cv", "dataset.fold=1", "--grid", "optimizer.lr=0.1", cwd=REPO)
    assert bad.returncode == 2 and "set by trainrepro cv" in bad.stderr
    unknown = cli("cv", "--grid", "optimizer.nope=1,2", "--root", str(tmp_path), cwd=REPO)
    assert unknown.returncode == 2 and "optimizer.nope" in unknown.stderr

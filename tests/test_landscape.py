"""scripts/plot_landscape.py on two tiny runs: interpolation end points are the runs' weights
with batch-norm statistics recomputed from the probe images, and stay finite past the ends;
directions are filter-normalized; the CLI writes the figure and its numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import tiny_cfg

from trainrepro.engine.train import train
from trainrepro.reproduce.scripts import load_script

landscape = load_script("plot_landscape")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("landscape")
    dirs = []
    for batch in (16, 128):
        cfg = tiny_cfg("epochs=1", f"batch_size={batch}", "dataset.num_train=256")
        assert train(cfg, root / f"b{batch}")["status"] == "completed"
        dirs.append(root / f"b{batch}")
    cfg = tiny_cfg("epochs=1", "model.width=2", "dataset.num_train=256")
    assert train(cfg, root / "wide")["status"] == "completed"
    return dirs, root / "wide"


def test_interpolation_ends_are_the_runs_with_recomputed_statistics(runs):
    (a_dir, b_dir), _ = runs
    run, a = landscape.load_run(a_dir)
    _, b = landscape.load_run(b_dir)
    train, test = (landscape.probe(run, split, 100) for split in (run.data.train, run.data.test))
    assert len(train[1]) == len(test[1]) == 100 and len(set(train[1].tolist())) > 2
    curve = landscape.interpolation(run, a, b, np.array([-0.5, 0.0, 1.0, 1.5]), train, test)
    for state, loss in ((a, curve["train_loss"][1]), (b, curve["train_loss"][2])):
        run.model.load_state_dict(state)
        landscape.recompute_batch_norm(run.model, train[0])
        assert landscape.loss_and_acc(run.model, train)[0] == pytest.approx(loss)
    # Interpolated running variances go negative past the ends; recomputed ones cannot.
    assert all(np.isfinite(curve["train_loss"])) and all(np.isfinite(curve["test_acc"]))


def test_recomputed_statistics_are_the_data_s(runs):
    """One pass in train mode with momentum None leaves the batch's own mean in the first BN."""
    (a_dir, _), _ = runs
    run, _ = landscape.load_run(a_dir)
    x = landscape.probe(run, run.data.train, 64)[0]
    landscape.recompute_batch_norm(run.model, x)
    first = next(m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    run.model.eval()
    with torch.no_grad():
        run.model(x)
    hook.remove()
    torch.testing.assert_close(first.running_mean, seen[0].mean(dim=(0, 2, 3)))
    assert first.momentum == 0.1 and not run.model.training


def test_direction_is_filter_normalized(runs):
    (a_dir, _), _ = runs
    run, _ = landscape.load_run(a_dir)
    d = landscape.filter_normalized_direction(run.model, seed=3)
    for name, p in run.model.named_parameters():
        if p.ndim <= 1:
            assert torch.count_nonzero(d[name]) == 0
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1))


def test_cli_writes_figure_and_numbers(runs, tmp_path):
    (a_dir, b_dir), _ = runs
    out = tmp_path / "fig" / "landscape"
    args = [str(a_dir), str(b_dir), "--out", str(out), "--points", "5", "--samples", "64"]
    assert landscape.main(args) == 0
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".pdf").is_file()
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["interpolation"]["alpha"]) == 5
    assert all(np.isfinite(v) for v in data["sharpness"].values())
    assert set(data["directions"]) == {str(a_dir), str(b_dir)}


def test_different_models_are_refused(runs, tmp_path, capsys):
    (a_dir, _), wide = runs
    assert landscape.main([str(a_dir), str(wide), "--out", str(tmp_path / "x")]) == 2
    assert "different models" in capsys.readouterr().err


def test_sharpness_over_directions_is_relative_to_the_loss_at_the_run(runs):
    """largebatch_landscape: per direction seed, the script's rise at ±0.5 divided by the loss
    at the run itself."""
    from trainrepro.reproduce.papers.largebatch_landscape import run_sharpness

    (a_dir, _), _ = runs
    got = run_sharpness(a_dir, seeds=(0, 1, 2), samples=64)
    run, state = landscape.load_run(a_dir)
    train = landscape.probe(run, run.data.train, 64)
    for seed, value in enumerate(got):
        curve = landscape.random_direction(run, state, np.linspace(-1, 1, 21), train, seed)
        at_zero = curve["train_loss"][10]
        assert value == pytest.approx(landscape.sharpness(curve) / at_zero, rel=1e-5)
    assert len(set(got)) == 3  # three different directions


def test_sharpness_file_is_kept_until_a_checkpoint_changes(runs, tmp_path, monkeypatch):
    from trainrepro.reproduce.papers import largebatch_landscape as lbl

    (a_dir, b_dir), _ = runs
    root = a_dir.parent
    pairs = {0: (a_dir.name, b_dir.name)}
    calls = []

    def fake(run_dir, *args, **kwargs):
        calls.append(run_dir)
        return [0.5] * len(lbl.DIRECTION_SEEDS)

    monkeypatch.setattr(lbl, "run_sharpness", fake)
    saved = tmp_path / lbl.SHARPNESS_FILE
    data = lbl.compute(root, pairs, saved, (16, 128))
    assert len(calls) == 2 and lbl.per_seed(data) == {0: (0.5, 0.5)}
    assert json.loads(saved.read_text())["seeds"]["0"]["runs"] == [a_dir.name, b_dir.name]
    lbl.compute(root, pairs, saved, (16, 128))
    assert len(calls) == 2  # unchanged checkpoints: read back
    row = json.loads(saved.read_text())
    row["seeds"]["0"]["sha256"][0] = "0" * 64  # as if the run had been trained again
    saved.write_text(json.dumps(row))
    lbl.compute(root, pairs, saved, (16, 128))
    assert len(calls) == 4

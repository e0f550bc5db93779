"""The callback seam and the gradient-histogram instrument of Liu et al. 2020 (Fig. 2).

Hooks run in order with the right update numbers; histogram rows match numpy on hand-made
gradients; a resumed run writes the same grad_hist.pt bit for bit (the negative controls show
the comparison can fail); bad values fail on one line; the plot script draws a run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from support import REPO, TINY, cli, tiny_cfg

import trainrepro.engine.train as train_module
import trainrepro.instruments.grad_hist as grad_hist_module
from trainrepro.engine.build import build_run
from trainrepro.engine.run import Callback
from trainrepro.engine.train import train
from trainrepro.instruments.grad_hist import (
    EXTRA,
    FILE_NAME,
    GradHistogram,
    grad_hist,
    histogram_summary,
    load_histogram,
)

# ------------------------------------------------------------------ hooks, through a config
EVENTS: list[tuple[Any, ...]] = []


class Recorder(Callback):
    """Logs every hook call in EVENTS; its state counts the updates it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def start(self, run: Any, run_dir: Path) -> None:
        EVENTS.append(("start", self.seen))

    def after_backward(self, run: Any, update: int) -> None:
        assert all(p.grad is not None for p in run.model.parameters())
        self.seen += 1
        self.before = [p.detach().clone() for p in run.model.parameters()]
        EVENTS.append(("after_backward", update))

    def after_step(self, run: Any, update: int, loss: torch.Tensor) -> None:
        # after the optimizer step: the parameters have moved, the loss is a detached scalar
        moved = any(
            not torch.equal(a, p) for a, p in zip(self.before, run.model.parameters(), strict=True)
        )
        assert moved and loss.ndim == 0 and not loss.requires_grad
        EVENTS.append(("after_step", update))

    def end_epoch(self, run: Any, epoch: int, row: dict[str, Any]) -> None:
        assert row["epoch"] == epoch and row["updates"] == self.seen
        row["recorder_seen"] = self.seen  # a key added here becomes a metrics.csv column
        EVENTS.append(("end_epoch", epoch))

    def finish(self, run_dir: Path, status: str) -> None:
        assert (run_dir / "summary.json").is_file()
        EVENTS.append(("finish", status))

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]
        EVENTS.append(("load_state_dict", self.seen))


def recorder(model: torch.nn.Module) -> Recorder:
    return Recorder()


# 512 images in batches of 64 split into micro-batches of 32: 8 updates an epoch, one hook each.
RECORDED = ("+callbacks.rec._target_=test_grad_hist.recorder", "max_micro_batch=32")


def _updates(first: int, last: int) -> list[tuple[str, int]]:
    return [(hook, u) for u in range(first, last + 1) for hook in ("after_backward", "after_step")]


def test_hooks_run_in_order_with_update_numbers(tmp_path):
    EVENTS.clear()
    train(tiny_cfg(*RECORDED), tmp_path)
    assert EVENTS == [
        ("start", 0),
        *_updates(1, 8),
        ("end_epoch", 1),
        *_updates(9, 16),
        ("end_epoch", 2),
        ("finish", "completed"),
    ]
    assert pd.read_csv(tmp_path / "metrics.csv")["recorder_seen"].tolist() == [8, 16]


def test_resumed_run_restores_callback_state_before_start(tmp_path):
    train(tiny_cfg(*RECORDED), tmp_path, stop_after_epoch=1)
    EVENTS.clear()
    train(tiny_cfg(*RECORDED, "resume=true"), tmp_path)
    assert EVENTS[:3] == [("load_state_dict", 8), ("start", 8), ("after_backward", 9)]
    assert EVENTS[-2:] == [("end_epoch", 2), ("finish", "completed")]


# ------------------------------------------------------------------ the counts, by hand
def _model_with_grads() -> torch.nn.Module:
    """A small model whose gradients span 1e-15..1e3, with zeros, 1.0 exactly, inf and NaN."""
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 4))
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        magnitude = torch.pow(10.0, torch.empty(p.shape).uniform_(-15, 3, generator=gen))
        sign = torch.randint(0, 2, p.shape, generator=gen) * 2 - 1
        p.grad = (magnitude * sign).float()
    flat = model[0].weight.grad.view(-1)
    flat[:25] = 0.0
    flat[25:28] = torch.tensor([1.0, -1.0, float("inf")])
    flat[28] = float("nan")
    return model


def _numpy_row(grads: list[np.ndarray], edges: np.ndarray) -> dict[str, Any]:
    g = np.abs(np.concatenate([x.ravel() for x in grads]).astype(np.float64))
    finite = g[np.isfinite(g) & (g > 0)]
    with np.errstate(divide="ignore"):
        logs = np.log10(finite)
    return {
        "counts": np.histogram(logs, bins=edges)[0],
        "zeros": int((g == 0).sum()),
        "below": int((logs < edges[0]).sum()),
        "above": int((logs > edges[-1]).sum() + np.isposinf(g).sum()),
        "nan": int(np.isnan(g).sum()),
        "entries": g.size,
    }


def _record(model: torch.nn.Module, run_dir: Path, **keys: Any) -> dict[str, Any]:
    callback = grad_hist(model, **keys)
    run = SimpleNamespace(model=model, device=torch.device("cpu"))
    callback.start(run, run_dir)  # type: ignore[arg-type]
    callback.after_backward(run, 1)  # type: ignore[arg-type]
    callback.after_backward(run, 2)  # type: ignore[arg-type]
    callback.finish(run_dir, "completed")
    return load_histogram(run_dir / FILE_NAME)


@pytest.mark.parametrize("chunk", [grad_hist_module.CHUNK, 97])
def test_counts_match_numpy_histogram(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(grad_hist_module, "CHUNK", chunk)  # 97: many chunks, one result
    model = _model_with_grads()
    hist = _record(model, tmp_path, bins=48, log10_min=-12.0, log10_max=0.0)
    edges = hist["edges"].numpy()
    assert np.array_equal(edges, np.linspace(-12.0, 0.0, 49))
    expected = _numpy_row([p.grad.numpy() for p in model.parameters()], edges)
    assert hist["updates"].tolist() == [1, 2]
    for i in range(2):
        assert np.array_equal(hist["counts"][i].numpy(), expected["counts"])
        for key in EXTRA:
            assert int(hist[key][i]) == expected[key], key
    n_entries = sum(p.numel() for p in model.parameters())
    total = hist["counts"].sum(1) + sum(hist[k] for k in EXTRA)
    assert total.tolist() == [n_entries, n_entries]
    assert int(hist["counts"][0, -1]) >= 2  # |g| = 1.0 falls in the closed last bin
    assert hist["zeros"][0] == 25 and hist["nan"][0] == 1 and hist["above"][0] >= 1


def test_params_filter(tmp_path):
    model = _model_with_grads()
    hist = _record(model, tmp_path, params=["2.*"], bins=10)
    assert hist["params"] == ["2.weight", "2.bias"]
    grads = [model[2].weight.grad.numpy(), model[2].bias.grad.numpy()]
    expected = _numpy_row(grads, hist["edges"].numpy())
    assert np.array_equal(hist["counts"][0].numpy(), expected["counts"])
    assert int(hist["counts"][0].sum() + sum(hist[k][0] for k in EXTRA)) == 30 * 4 + 4


def test_histogram_summary(tmp_path):
    model = _model_with_grads()
    _record(model, tmp_path, bins=120)  # 0.1 decade per bin
    summary = histogram_summary(tmp_path / FILE_NAME)
    assert summary["update"].tolist() == [1, 2]
    g = np.abs(np.concatenate([p.grad.numpy().ravel() for p in model.parameters()]))
    assert summary["entries"].iloc[0] == g.size
    assert summary["zero_fraction"].iloc[0] == pytest.approx(25 / g.size)
    logs = np.log10(g[(g > 0) & ~np.isnan(g)].astype(np.float64))
    for q, column in ((0.1, "p10"), (0.5, "median"), (0.9, "p90")):
        exact = np.quantile(logs, q)
        if -12 <= exact <= 0:
            assert summary[column].iloc[0] == pytest.approx(exact, abs=0.1)
        else:  # outside the range only the side is known
            assert summary[column].iloc[0] == (np.inf if exact > 0 else -np.inf)


# ------------------------------------------------------------------ resume, bit for bit
RESUME_RUN = ("epochs=3", "model.dropout=0.3", "schedule=step", "schedule.milestones=[1.5]")
# 20 of the 24 updates: the recording stops inside the resumed part.
GRAD_HIST = (
    "+callbacks=grad_hist",
    "callbacks.grad_hist.updates=20",
    "callbacks.grad_hist.bins=40",
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("full")
    assert train(tiny_cfg(*RESUME_RUN, *GRAD_HIST), run_dir)["status"] == "completed"
    return load_histogram(run_dir / FILE_NAME)


def interrupted_then_resumed(run_dir: Path) -> dict[str, Any]:
    train(tiny_cfg(*RESUME_RUN, *GRAD_HIST), run_dir, stop_after_epoch=1)
    assert load_histogram(run_dir / FILE_NAME)["updates"].tolist() == list(range(1, 9))
    torch.manual_seed(12345)  # a new process would start from some other RNG state
    train(tiny_cfg(*RESUME_RUN, *GRAD_HIST, "resume=true"), run_dir)
    return load_histogram(run_dir / FILE_NAME)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_resume_writes_the_same_histograms(tmp_path, uninterrupted):
    n_params = sum(p.numel() for p in build_run(tiny_cfg()).model.parameters())
    assert uninterrupted["updates"].tolist() == list(range(1, 21))
    total = uninterrupted["counts"].sum(1) + sum(uninterrupted[k] for k in EXTRA)
    assert (total == n_params).all()
    assert _same(interrupted_then_resumed(tmp_path), uninterrupted)


@pytest.mark.parametrize("skipped", ["load_state_dict", "restore_optimizer"])
def test_negative_control_resume_without_state_differs(
    tmp_path, uninterrupted, monkeypatch, skipped
):
    if skipped == "load_state_dict":  # the rows recorded before the interruption are lost
        monkeypatch.setattr(GradHistogram, "load_state_dict", lambda self, state: None)
    else:  # no momentum after the resume: the gradients from update 10 on differ
        monkeypatch.setattr(train_module, skipped, lambda *args, **kwargs: None)
    resumed = interrupted_then_resumed(tmp_path)
    assert not _same(resumed, uninterrupted)
    if skipped == "restore_optimizer":
        assert torch.equal(resumed["counts"][:9], uninterrupted["counts"][:9])
        assert (resumed["counts"][9:] != uninterrupted["counts"][9:]).any(dim=1).all()


# ------------------------------------------------------------------ command line and plot
TINY_CLI = [o for o in TINY if not o.startswith("epochs")] + ["epochs=1"]
GH = "+callbacks=grad_hist"
BAD_INPUTS = {
    "unknown option": (
        ["+callbacks=nope"],
        "callbacks=nope",
        "valid: agc, clip_norm, ema, grad_hist, snapshots, swa",
    ),
    "unknown option in a list": (["+callbacks=[grad_hist,nope]"], "callbacks=nope", "valid:"),
    "unknown key": ([GH, "+callbacks.grad_hist.bin=5"], "callbacks.grad_hist.bin", "valid:"),
    "zero updates": (
        [GH, "callbacks.grad_hist.updates=0"],
        "callbacks.grad_hist.updates=0",
        ">= 1",
    ),
    "zero bins": ([GH, "callbacks.grad_hist.bins=0"], "callbacks.grad_hist.bins=0", ">= 1"),
    "empty range": (
        [GH, "callbacks.grad_hist.log10_min=0"],
        "callbacks.grad_hist.log10_min=0",
        "< log10_max",
    ),
    "pattern matching nothing": (
        [GH, "callbacks.grad_hist.params=[fc.*,nothing.*]"],
        "callbacks.grad_hist.params=nothing.*",
        "matches no parameter",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_input_one_line_nothing_written(tmp_path, case):
    args, key_value, reason = case
    run_dir = tmp_path / "run"
    result = cli(*TINY_CLI, *args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and key_value in lines[0] and reason in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()


def _plot(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    script = REPO / "scripts" / "plot_grad_hist.py"
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_run_then_plot(tmp_path):
    run_dir = tmp_path / "run"
    filtered = "callbacks.grad_hist.params=[fc.*]"
    result = cli(
        *TINY_CLI, "+callbacks=[grad_hist]", filtered, f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    hist = load_histogram(run_dir / FILE_NAME)
    assert hist["params"] == ["fc.weight", "fc.bias"] and len(hist["updates"]) == 512 // 64

    out = tmp_path / "figs" / "grad_hist"
    result = _plot(run_dir, run_dir, "--titles", "a", "b", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for suffix in (".png", ".pdf"):
        assert (out.parent / f"grad_hist{suffix}").stat().st_size > 1000

    missing = tmp_path / "no_hist"
    missing.mkdir()
    result = _plot(run_dir, missing, "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]

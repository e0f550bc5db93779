"""A run's life from a new user's side: a run folder that cannot be made, a folder left with a
killed write's temporary file, a refused sweep, resuming a completed run, the printed command
that continues an interrupted one, the record of every command, one line per epoch without the
bar, and the estimate of a long run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from support import REPO, TINY, cli, make_cfg, tiny_cfg

from trainrepro.engine.train import train
from trainrepro.errors import ConfigError

TINY_CLI = [o for o in TINY if not o.startswith("epochs")] + ["epochs=1"]
ESTIMATE_ENV = "TRAINREPRO_ESTIMATE_OVER_S"  # spelled out: the README documents this name


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and its modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def with_tests_on_path() -> dict[str, str]:
    """The environment for a CLI run that loads tests/signal_callback.py (a test callback)."""
    paths = [str(REPO / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


# ------------------------------------------------------------------- folders that cannot be made

UNMAKEABLE = {
    "run under a file": ([], "hydra.run.dir", "{file}/run", "run", "Not a directory: {file}"),
    "sweep under a file": (
        ["-m", "seed=0,1"],
        "hydra.sweep.dir",
        "{file}/sweep",
        "sweep",
        "Not a directory: {file}",
    ),
    "run under /proc": ([], "hydra.run.dir", "/proc/trainrepro-run", "run", ": /proc"),
}


@pytest.mark.parametrize("case", UNMAKEABLE.values(), ids=list(UNMAKEABLE))
def test_a_folder_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, case):
    """Root ignores permission bits, so the cases fail for any user: a path through a regular
    file, and /proc (where not even root makes a folder)."""
    extra, key, folder, what, reason = case
    if folder.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    a_file = tmp_path / "a file"
    a_file.write_text("not a folder")
    folder = folder.format(file=a_file)
    result = cli(*TINY_CLI, *extra, f"{key}={folder}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()  # the OS's reason for /proc varies with the user
    assert line.startswith(f"error: {key}={folder}: cannot create the {what} folder (")
    assert line.endswith(f"{reason.format(file=a_file)})"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]


# ------------------------------------------------------------- temporary files of a killed write


def test_stale_temporaries_go_at_start_and_at_resume_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # What kill -9 during a checkpoint write leaves (records.atomic_write_bytes' pattern) ...
    (run_dir / ".checkpoint.pt.k3x_9qzu.tmp").write_bytes(b"")
    # ... and files of the user's that only look alike: they stay, byte for byte.
    mine = {
        "notes.txt": b"mine",
        ".checkpoint.pt.tmp": b"1",
        ".draft.tmp": b"2",
        ".metrics.csv.TOOLONGNAME.tmp": b"3",
        "x.checkpoint.pt.abcdefgh.tmp": b"4",
    }
    for name, data in mine.items():
        (run_dir / name).write_bytes(data)

    first = train(tiny_cfg(), run_dir, stop_after_update=3)
    assert first["status"] == "interrupted"
    assert not (run_dir / ".checkpoint.pt.k3x_9qzu.tmp").exists()

    (run_dir / ".summary.json.a1b2c3d4.tmp").write_bytes(b"{")
    assert train(tiny_cfg("resume=true"), run_dir)["status"] == "completed"
    assert not (run_dir / ".summary.json.a1b2c3d4.tmp").exists()
    assert {name: (run_dir / name).read_bytes() for name in mine} == mine


# ---------------------------------------------------------------------------- a refused sweep


def test_a_refused_sweep_writes_nothing_not_even_multirun_yaml(tmp_path):
    sweep = tmp_path / "sweep"
    base = ["-m", *TINY_CLI, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert cli(*base, cwd=tmp_path).returncode == 0
    before = snapshot(sweep)
    assert "multirun.yaml" in before

    result = cli(*base, "epochs=2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: epochs=2: differs from"), result.stderr
    assert f"{sweep / '0'}'s finished run" in result.stderr
    assert "finished earlier" not in result.stdout  # refused before any job ran
    assert snapshot(sweep) == before


def test_the_sweep_check_finds_jobs_in_a_custom_subdir(tmp_path):
    """With ``hydra.sweep.subdir`` other than the job number, each job's folder is resolved as
    Hydra's launcher resolves it; the run in job 1's folder (seed 1) is compared with job 1."""
    from trainrepro.engine.launch import check_launch

    sweep = tmp_path / "sweep"
    folder = sweep / "seed1"
    folder.mkdir(parents=True)
    saved = OmegaConf.to_container(tiny_cfg("epochs=1", "seed=1"), resolve=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    args = [
        "-m",
        *TINY_CLI,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=seed${seed}",
    ]
    check_launch(args)  # the same config: the job would be skipped, nothing to refuse
    with pytest.raises(ConfigError, match=r"^optimizer.lr=0.05: differs from .*seed1's finished"):
        check_launch([*args, "optimizer.lr=0.05"])


# ---------------------------------------------------------------- resuming a completed run


def test_resuming_a_completed_run_says_so_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    assert train(make_cfg(*TINY_CLI), run_dir)["status"] == "completed"
    before = snapshot(run_dir)

    result = cli(*TINY_CLI, "resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"run in {run_dir} is complete (epochs 1 of 1): nothing to do"
    ]
    assert snapshot(run_dir) == before

    other = cli(
        *TINY_CLI, "optimizer.lr=0.3", "resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert other.returncode == 2
    assert other.stderr.startswith("error: optimizer.lr=0.3: differs from the checkpoint's")
    assert snapshot(run_dir) == before


# ------------------------------------------------- the printed command that continues a run


def test_the_printed_command_resumes_an_interrupted_run_as_it_is(tmp_path):
    """Interrupted in the default run folder (a new timestamped one per invocation), the run
    prints a command that, typed as printed, continues it; the path has a space to quote."""
    cwd = tmp_path / "my work"
    cwd.mkdir()
    kill = ["+callbacks.kill._target_=signal_callback.signal_at", "+callbacks.kill.update=3"]
    first = subprocess.run(
        [sys.executable, "-m", "trainrepro", *TINY_CLI, *kill],
        cwd=cwd,
        env=with_tests_on_path(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 143, first.stderr
    lines = first.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("interrupted (SIGTERM)"))
    assert lines[at].endswith("continue with:")
    command = shlex.split(lines[at + 1])
    (run_dir,) = (cwd / "runs").glob("*/*")
    assert command[-2:] == ["resume=true", f"hydra.run.dir={run_dir}"]

    second = subprocess.run(
        command, cwd=cwd, env=with_tests_on_path(), capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr
    assert "resumed from epoch 1, batch 3" in second.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["position"]["updates"] == 512 // 64
    assert summary["commands"] == [[*TINY_CLI, *kill], [*TINY_CLI, *kill, "resume=true"]]
    assert list((cwd / "runs").glob("*/*")) == [run_dir]  # no new timestamped folder


# --------------------------------------------------------------- every command, in summary.json


def test_summary_keeps_every_command_the_first_first(tmp_path):
    first_command = ["model.dropout=0.3", "seed=3"]
    second = [*first_command, "resume=true", "checkpoint_every=2"]
    third = [*first_command, "resume=true"]
    train(tiny_cfg(*first_command), tmp_path, stop_after_update=3, command=first_command)
    train(tiny_cfg(*second), tmp_path, stop_after_update=5, command=second)
    assert train(tiny_cfg(*third), tmp_path, command=third)["status"] == "completed"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["command"] == first_command  # what started the run, as before resumes existed
    assert saved["commands"] == [first_command, second, third]


# ------------------------------------------------------------ what a run prints while it runs


def test_progress_false_keeps_one_line_per_epoch_and_a_short_run_no_estimate(tmp_path, capsys):
    """progress=false drops only the bar: the per-epoch line is the one progress=true prints."""
    summary = train(tiny_cfg(), tmp_path)  # TINY: 2 epochs, progress=false
    out, err = capsys.readouterr()
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[:2] for line in epoch_lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    final = summary["final"]
    assert epoch_lines[-1] == (
        f"epoch 2/2 train_loss={final['train_loss']:.4g} train_acc={final['train_acc']:.4g} "
        f"test_loss={final['test_loss']:.4g} test_acc={final['test_acc']:.4g}"
    )
    assert "it/s" not in err and "s/it" not in err  # no tqdm bar
    assert "estimate:" not in out  # seconds, far under the default hour


def test_a_long_run_says_how_long_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ESTIMATE_ENV, "0")  # every run counts as long
    command = ["epochs=1", "seed=3"]
    train(tiny_cfg(*command), tmp_path, command=command)
    out = capsys.readouterr().out
    estimates = [line for line in out.splitlines() if line.startswith("estimate: ")]
    assert len(estimates) == 1, out
    assert "updates/s, 8 updates in the run: about " in estimates[0]
    assert " h of training" in estimates[0]
    assert "`trainrepro plan epochs=1 seed=3`" in out
    assert "--profile quick" in out


def test_a_bad_estimate_threshold_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(ESTIMATE_ENV, "an hour")
    with pytest.raises(ConfigError, match=f"^{ESTIMATE_ENV}=an hour: must be a number"):
        train(tiny_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()

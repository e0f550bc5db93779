"""A paper at a glance (trainrepro/reproduce/status.py, progress.py): ``--status`` reads each run's
state from fake run directories written as the runner and trainer write them, the totals and
ETA come out of known numbers, and a reproduce run of stand-in processes prints its progress
line after each run's start and end, with the per-run lines unchanged."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from trainrepro.engine import runner
from trainrepro.reproduce import cli
from trainrepro.reproduce.cli import main as reproduce
from trainrepro.reproduce.papers import PAPERS
from trainrepro.reproduce.progress import Progress
from trainrepro.reproduce.status import RunView, eta, status_report, totals_line

PAPER = "mobilenetv2"  # nine quick runs: three presets x three seeds
COLUMNS = "epoch,updates,samples,grad_evals,lr,batch_size,momentum,noise_scale,train_loss,"
COLUMNS += "train_acc,test_loss,test_acc,val_loss,val_acc,epoch_seconds,train_seconds,wall_seconds"


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def write_run(
    run_dir: Path,
    *,
    at: float,
    epochs: int = 4,
    rows: int = 0,
    seconds: float = 10.0,
    status: str | None = None,
    checkpoint: bool = True,
    log: list[str] = (),
) -> None:
    """A run directory as the trainer leaves it, every file written at time ``at``; ``log``:
    the runner's ``== `` lines of ``<run dir>.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        f"model:\n  name: mobilenetv2\nepochs: {epochs}\nseed: 0\n"
    )
    if rows:
        lines = [COLUMNS] + [
            f"{e},{100 * e},{3200 * e},{3200 * e},0.1,32,0.9,1.0,2.0,20.0,2.1,21.0,,,{seconds},"
            f"{seconds * 0.8},{seconds * e}"
            for e in range(1, rows + 1)
        ]
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if checkpoint and rows:
        (run_dir / "checkpoint.pt").write_bytes(b"x")
    if status:
        signal = "SIGTERM" if status == "interrupted" else None
        summary = {"status": status, "epochs_completed": rows, "signal": signal}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    paths = list(run_dir.iterdir())
    if log:
        (run_dir.parent / f"{run_dir.name}.log").write_text("\n".join(log) + "\n")
        paths.append(run_dir.parent / f"{run_dir.name}.log")
    for path in paths:
        os.utime(path, (at, at))


def fake_paper(root: Path, now: float) -> dict[str, str]:
    """One run in each state, every run at 10 s per epoch and 4 epochs; the expected states."""
    start = f"== {stamp(now - 400)} code 0123456789ab python -m trainrepro"
    write_run(root / "mobilenetv2/seed0", at=now - 900, rows=4, status="completed")
    write_run(root / "relu6/seed0", at=now - 800, rows=2, status="diverged")
    # in flight: the log's last line is a start, metrics.csv written 5 s ago
    write_run(root / "expansion/seed0", at=now - 5, rows=2, log=[start])
    # stopped by SIGTERM at a checkpoint (an older runner: no exit line in the log)
    write_run(root / "mobilenetv2/seed1", at=now - 600, rows=1, status="interrupted")
    # crashed before its first epoch: no summary, the runner's exit line says 1
    write_run(root / "relu6/seed1", at=now - 300, log=[start, f"== {stamp(now - 300)} exit 1"])
    # nothing written for an hour and no exit line: killed without a word
    write_run(root / "expansion/seed1", at=now - 3600, rows=1, log=[start])
    # interrupted once, then resumed 10 s ago: config.yaml rewritten after the summary
    write_run(root / "mobilenetv2/seed2", at=now - 100, rows=1, status="interrupted")
    os.utime(root / "mobilenetv2/seed2/config.yaml", (now - 10, now - 10))
    return {
        "mobilenetv2/seed0": "completed",
        "relu6/seed0": "diverged",
        "expansion/seed0": "running",
        "mobilenetv2/seed1": "interrupted",
        "relu6/seed1": "failed",
        "expansion/seed1": "stale",
        "mobilenetv2/seed2": "running",
        "relu6/seed2": "not started",
        "expansion/seed2": "not started",
    }


def snapshot(root: Path) -> dict[str, tuple[float, int]]:
    return {str(p): (p.stat().st_mtime, p.stat().st_size) for p in root.rglob("*")}


def test_status_reads_each_runs_state_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    expected = fake_paper(root, time.time())
    before = snapshot(root)
    assert reproduce([PAPER, "--profile", "quick", "--status", "--runs-root", str(root)]) == 0
    assert snapshot(root) == before  # read only
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{PAPER} --profile quick: 9 runs in {root}")
    table = {}
    for line in lines[2:-1]:
        state, epochs = line[:12].strip(), line[12:21].split()[0]
        table[re.search(r"\s(\S+/seed\d)", line).group(1)] = (state, epochs, line)
    assert [run.path for run in PAPERS[PAPER].profiles["quick"].runs] == list(table)
    assert {run: state for run, (state, *_) in table.items()} == expected
    assert table["expansion/seed0"][1] == "2/4" and table["relu6/seed2"][1] == "-/4"
    assert "exit 1" in table["relu6/seed1"][2] and "SIGTERM" in table["mobilenetv2/seed1"][2]
    assert "no write for 60 min" in table["expansion/seed1"][2]
    # Running: 2 epochs left at 10 s, 5 s into the third -> 15 s; resumed 10 s ago with 3
    # left -> 20 s; two not started, 4 x 10 s each, on the 2 slots: 15 + 40 and 20 + 40.
    assert lines[-1].startswith(
        "9 runs: 2 done (1 diverged), 2 running, 2 left, 1 failed, 1 interrupted, 1 stale; "
        "ETA about 60 s ("
    )
    assert lines[-1].endswith("at 2 at a time (10 s per epoch, median of 6 runs over 11 epochs)")


def test_eta_borrows_the_seconds_per_epoch_of_the_same_key_else_the_median():
    now = 1000.0
    views = [
        RunView(Path("a0"), ("a",), "running", 2, 4, 10.0, now - 5, now - 5),
        RunView(Path("d0"), ("d",), "completed", 3, 3, 30.0, now - 50, now - 50),
        RunView(Path("a1"), ("a",), "not started", epochs=4),  # a's own 10 s: 40 s
        RunView(Path("c0"), ("c",), "not started", epochs=3),  # median(10, 30): 60 s
    ]
    seconds, basis = eta(views, 2, now)
    assert seconds == 75.0  # slots: 15 then 60 after it; 40 on the other
    assert "1 runs unlike any measured one" in basis
    assert eta(views, 1, now)[0] == 115.0
    line = totals_line(views, 2, now)
    assert line.startswith("4 runs: 1 done, 1 running, 2 left; ETA about 75 s (00:17 UTC) at 2")
    assert eta(views[2:], 2, now) == (None, "after the first finished epoch")
    assert totals_line(views[1:2], 2, now) == "1 runs: 1 done, 0 running, 0 left"


def test_a_reproduce_run_prints_its_progress_after_each_start_and_end(
    tmp_path, monkeypatch, capsys
):
    """Stand-in runs of 2 epochs at 1 s each, one at a time; one run is kept, the last fails.
    Each start and end is followed by the totals, in order; the log holds no carriage return."""
    root = tmp_path / "runs"
    kept = root / "mobilenetv2/seed0"
    write_run(kept, at=time.time() - 60, epochs=2, rows=2, seconds=1.0, status="completed")
    last = root / "expansion/seed2"

    class StandIn:
        def __init__(self, cmd, **kwargs):
            arg = next(a for a in cmd if a.startswith("hydra.run.dir="))
            self.run_dir = Path(arg.split("=", 1)[1])

        def wait(self):
            if self.run_dir == last:
                return 1  # a crash: no summary
            write_run(self.run_dir, at=time.time(), epochs=2, rows=2, seconds=1.0,
                      status="completed")  # fmt: skip
            return 0

    real = runner.subprocess.Popen  # git runs, for the code stamp; training runs are stand-ins
    monkeypatch.setattr(runner.subprocess, "Popen", lambda cmd, **kw: (
        StandIn if cmd[1:3] == ["-m", "trainrepro"] else real)(cmd, **kw))  # fmt: skip
    # The preflight (configs and data) is tested elsewhere; here it only hands out the epochs.
    monkeypatch.setattr(cli, "preflight_errors", lambda specs, epochs: epochs.update(
        {d: 2 for d, _ in specs}) or [])  # fmt: skip
    args = [PAPER, "--profile", "quick", "--runs-root", str(root), "--jobs", "1"]
    assert reproduce(args) == 1  # the failed run: no report
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    counts = [
        tuple(int(n) for n in re.match(r"progress: 9 runs: (\d+) done, (\d+) running, (\d+) left"
                                       r"(?:, (\d+) failed)?", line).groups(default="0"))
        for line in lines
        if line.startswith("progress: ")
    ]  # fmt: skip
    expected = [(1, 0, 8, 0)]  # the kept run counts from the first line
    for done in range(1, 8):
        expected += [(done, 1, 8 - done, 0), (done + 1, 0, 8 - done, 0)]
    expected += [(8, 1, 0, 0), (8, 0, 0, 1)]
    assert counts == expected
    for i, line in enumerate(lines):  # each run's own line, then the totals
        if line.endswith("started (resume=false)") or " finished in " in line or "FAILED" in line:
            assert lines[i + 1].startswith("progress: ")
    first_end = next(i for i, line in enumerate(lines) if " finished in " in line)
    # 7 runs of 2 epochs at the 1 s measured, one at a time (the failing one counts as left)
    assert "left; ETA about 14 s (" in lines[first_end + 1]
    assert f"{kept}: done, kept" in lines
    log = (root / "relu6/seed0.log").read_text().splitlines()
    assert log[0].split()[2] == "code" and re.fullmatch(r"== \S+ exit 0 after \d+ s", log[-1])
    # the runner's exit line is what tells --status that the last run failed
    status = status_report(cli.run_specs(PAPERS[PAPER], PAPERS[PAPER].profiles["quick"], root),
                           root, 1, PAPER)  # fmt: skip
    assert status.splitlines()[-2].startswith("failed ") and "exit 1" in status.splitlines()[-2]
    assert status.splitlines()[-1] == "9 runs: 8 done, 0 running, 0 left, 1 failed"


def test_on_a_terminal_the_bar_stays_below_whole_lines(tmp_path, capsys):
    specs = [(tmp_path / "a", []), (tmp_path / "b", [])]
    with Progress(specs, 1, {tmp_path / "a": 2, tmp_path / "b": 2}, tty=True) as progress:
        progress(tmp_path / "a", "started")
        runner.say(f"{tmp_path / 'a'}: finished in 1 s")
    out = capsys.readouterr().out
    assert f"\r\x1b[K{tmp_path / 'a'}: finished in 1 s\n[" in out  # bar cleared, line, bar
    assert "2 runs: 0 done, 1 running, 1 left" in out
    assert out.endswith("\r\x1b[K" + "progress: 2 runs: 0 done, 1 running, 1 left; ETA after "
                        "the first finished epoch\n")  # fmt: skip

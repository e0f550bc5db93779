"""The ``logger`` group (conf/logger/, trainrepro/instruments/loggers.py): what TensorBoard,
wandb (offline) and mlflow (a file store) receive from tiny runs, that a resumed run continues
the same logged run with its steps, that only rank 0 logs, and the one line for a missing
package. wandb and mlflow are optional extras: their tests skip without them."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from support import tiny_cfg

from trainrepro.engine import distributed
from trainrepro.engine.checkpoint import CHECKPOINT_NAME
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError
from trainrepro.instruments import loggers

# 128 8x8 images at batch 16: 8 updates an epoch, two epochs; the loss is logged every 3.
RUN = (
    "dataset.num_train=128", "dataset.num_test=32", "dataset.image_size=8",
    "dataset.augment=false", "batch_size=16", "epochs=2",
)  # fmt: skip
EVERY = 3
LOSS_STEPS = [3, 6, 9, 12, 15]
EPOCH_STEPS = [8, 16]  # each epoch's last update
# The numeric columns of metrics.csv in a run without validation data or callbacks.
COLUMNS = (
    "epoch", "updates", "samples", "grad_evals", "lr", "batch_size", "momentum", "noise_scale",
    "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "train_seconds",
    "wall_seconds",
)  # fmt: skip


def logger_cfg(option: str, *overrides: str):
    return tiny_cfg(*RUN, f"logger={option}", f"logger.every_n_updates={EVERY}", *overrides)


def interrupted_then_resumed(option: str, run_dir: Path, *overrides: str) -> None:
    """Stop after epoch 1 (a checkpoint at update 8), then resume to the end."""
    first = train(logger_cfg(option, *overrides), run_dir, stop_after_epoch=1)
    assert first["status"] == "interrupted"
    resumed = train(logger_cfg(option, *overrides, "resume=true"), run_dir)
    assert resumed["status"] == "completed"


def accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_logs_and_a_resume_continues_its_steps(tmp_path):
    run_dir = tmp_path / "run"
    assert train(logger_cfg("tensorboard"), run_dir, stop_after_epoch=1)["status"] == "interrupted"
    at_epoch_1 = (run_dir / CHECKPOINT_NAME).read_bytes()
    # Resume, stop at update 14 (logging 9 and 12), then go back to the epoch-1 checkpoint: as
    # if the process had crashed after logging past its last checkpoint.
    cut = train(logger_cfg("tensorboard", "resume=true"), run_dir, stop_after_update=14)
    assert cut["status"] == "interrupted"
    (run_dir / CHECKPOINT_NAME).write_bytes(at_epoch_1)
    assert train(logger_cfg("tensorboard", "resume=true"), run_dir)["status"] == "completed"

    log_dir = run_dir / "tensorboard"
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert len(files) == 3 and [p for p in run_dir.iterdir() if p.is_dir()] == [log_dir]
    events = accumulator(log_dir)
    loss = events.Scalars("update/loss")
    assert [e.step for e in loss] == LOSS_STEPS  # continued, the replayed 9 and 12 once each
    assert [e.step for e in events.Scalars("update/lr")] == LOSS_STEPS
    rows = pd.read_csv(run_dir / "metrics.csv")
    for column in COLUMNS:
        logged = events.Scalars(f"epoch/{column}")
        assert [e.step for e in logged] == EPOCH_STEPS, column
        assert [e.value for e in logged] == pytest.approx(rows[column].tolist(), rel=1e-6)
    text = events.Tensors("config/text_summary")[0]
    assert text.step == 0
    logged_config = text.tensor_proto.string_val[0].decode()
    assert f"every_n_updates: {EVERY}" in logged_config and "name: tensorboard" in logged_config

    # The resumed processes' files tell TensorBoard to drop what came after the checkpoint.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    def purge_step(path: Path) -> int | None:
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                return event.step
        return None

    assert [purge_step(p) for p in files] == [None, 9, 9]

    # A resume with another logger is refused, naming the key; nothing runs.
    with pytest.raises(ConfigError, match=r"^logger._target_=.*\.csv: differs from"):
        train(tiny_cfg(*RUN, "resume=true"), run_dir)


def test_only_rank_0_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    summary = train(logger_cfg("tensorboard", "epochs=1"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt", "config.yaml", "metrics.csv", "summary.json",
    ]  # fmt: skip


def test_checkpoints_from_before_the_logger_key_resume_with_csv(tmp_path):
    run_dir = tmp_path / "run"
    assert train(tiny_cfg(*RUN, "epochs=1"), run_dir)["status"] == "completed"
    path = run_dir / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    config = yaml.safe_load(ckpt["config_yaml"])
    assert config.pop("logger") == {"_target_": "trainrepro.instruments.loggers.csv", "name": "csv"}
    ckpt["config_yaml"] = yaml.safe_dump(config)
    torch.save(ckpt, path)
    assert train(tiny_cfg(*RUN, "epochs=1", "resume=true"), run_dir)["status"] == "completed"
    with pytest.raises(ConfigError, match=r"^logger._target_=.*\.tensorboard: differs from"):
        train(logger_cfg("tensorboard", "epochs=1", "resume=true"), run_dir)


def test_the_loss_is_read_only_every_n_updates():
    """Reading the loss (.item()) waits for the device: only on the updates that log it."""
    reads = []

    class Loss:
        def item(self) -> float:
            reads.append(1)
            return 1.0

    logger = loggers.tensorboard(every_n_updates=4)
    logged = []
    logger.log = lambda values, step: logged.append((step, values))
    logger.active = True  # as start() sets it on rank 0, without opening a writer
    run = SimpleNamespace(optimizer=SimpleNamespace(param_groups=[{"lr": 0.5}]))
    for update in range(1, 11):
        logger.after_step(run, update, Loss())
    assert logged == [(u, {"update/loss": 1.0, "update/lr": 0.5}) for u in (4, 8)]
    assert len(reads) == 2
    with pytest.raises(ConfigError, match=r"^logger.every_n_updates=0: must be >= 1$"):
        loggers.tensorboard(every_n_updates=0)


@pytest.mark.parametrize("option", ["wandb", "mlflow"])
def test_a_missing_package_is_refused_before_anything_is_written(option, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, option, None)  # import fails, find_spec finds nothing
    with pytest.raises(ConfigError) as caught:
        train(logger_cfg(option), tmp_path / "run")
    assert str(caught.value) == (
        f'logger={option}: needs the {option} package: pip install -e ".[{option}]"'
    )
    assert not (tmp_path / "run").exists()


def wandb_history(run_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(run id, logged values) of every history record of the offline runs in ``run_dir``,
    read from their .wandb files (LevelDB's log format behind a 7-byte header, 32 KiB blocks;
    wandb's Python reader is gone from recent versions)."""
    import json

    from wandb.proto import wandb_internal_pb2

    found = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        data, pos, chunk, block = path.read_bytes(), 7, b"", 32768
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            chunk += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # full record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunk)
                chunk = b""
                if record.WhichOneof("record_type") == "history":
                    items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                             for i in record.history.item}  # fmt: skip
                    found.append((path.stem.removeprefix("run-"), items))
    return found


def test_wandb_offline_run_continues_on_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='wandb is an optional extra: pip install -e ".[wandb]"')
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    run_dir = tmp_path / "run"
    interrupted_then_resumed("wandb", run_dir)
    run_id = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["callbacks"][0]["run_id"]
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    history = wandb_history(run_dir)
    assert {rid for rid, _ in history} == {run_id}
    loss = [v["update"] for _, v in history if "update/loss" in v]
    assert loss == LOSS_STEPS
    test_acc = [v["update"] for _, v in history if "epoch/test_acc" in v]
    assert test_acc == EPOCH_STEPS


def test_mlflow_file_store_run_continues_on_resume(tmp_path):
    pytest.importorskip("mlflow", reason='mlflow is an optional extra: pip install -e ".[mlflow]"')
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    interrupted_then_resumed("mlflow", run_dir)
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("trainrepro")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resume continued it
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert run.info.run_id == torch.load(run_dir / CHECKPOINT_NAME)["callbacks"][0]["run_id"]
    assert run.data.params["logger.every_n_updates"] == str(EVERY)
    loss = client.get_metric_history(run.info.run_id, "update/loss")
    assert sorted(m.step for m in loss) == LOSS_STEPS
    test_acc = client.get_metric_history(run.info.run_id, "epoch/test_acc")
    assert sorted(m.step for m in test_acc) == EPOCH_STEPS
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    logged = yaml.safe_load((artifacts / "config.yaml").read_text())  # the first start's
    assert logged == {**yaml.safe_load((run_dir / "config.yaml").read_text()), "resume": False}

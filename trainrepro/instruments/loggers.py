"""Experiment loggers (the ``logger`` group): TensorBoard, Weights & Biases, MLflow.

Each is a callback (trainrepro.engine.run) built from ``cfg.logger`` after the run's
``cfg.callbacks``, so its ``end_epoch`` sees the columns they add. metrics.csv is written by
the trainer whatever the logger; ``logger=csv`` (the default) adds nothing else. The option
files follow lightning-hydra-template's ``configs/logger/`` (one file per backend); the
per-update logging against one step axis follows Lightning's loggers.

What each logs, against the update count (the ``updates`` column of metrics.csv):

- every ``every_n_updates`` updates: ``update/loss`` (that batch's mean loss, read with
  ``.item()`` on those updates only: the read waits for the device) and ``update/lr``;
- at each epoch end, at the epoch's last update: ``epoch/<column>`` for every numeric column
  of the metrics row (``epoch/epoch`` maps updates to epochs);
- once, at the start: the resolved config (run_dir/config.yaml).

Only rank 0 logs under torchrun. A resumed run continues the same logged run: the wandb and
mlflow run ids and the last update travel in the checkpoint (``state_dict``); TensorBoard
appends to the same folder, and ``purge_step`` hides what a crashed process logged after its
last checkpoint (those updates are logged again). Each job of a Hydra multirun has its own
run dir, and so its own logged run.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainrepro.config import first_line
from trainrepro.engine import distributed
from trainrepro.engine.checkpoint import flatten
from trainrepro.engine.run import Callback
from trainrepro.errors import ConfigError, check_int

if TYPE_CHECKING:
    from trainrepro.engine.run import Run, Tensor

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
WANDB_MODES = (None, "online", "offline", "disabled")
# mlflow's run states for the summary's status; an interrupted run is resumed later.
MLFLOW_STATUS = {"completed": "FINISHED", "diverged": "FAILED", "interrupted": "KILLED"}
# The limit of every mlflow backend on a parameter's value (newer ones take more).
MLFLOW_PARAM_CHARS = 500
MLFLOW_BATCH = 100  # parameters per log_batch call, mlflow's limit


def require(option: str, package: str) -> None:
    """ConfigError naming ``logger=<option>`` and the pip command, when ``package`` is absent.
    Checked without importing it (wandb and mlflow take a second to import)."""
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            "logger", option, f'needs the {package} package: pip install -e ".[{option}]"'
        )


def numeric_columns(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric values (not bools; None for columns left empty is left out)."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_label(run_dir: Path) -> str:
    """A default run name: the run dir's last two parts (``2024-05-01/12-00-00``, a sweep's
    ``<sweep>/3``), so the jobs of a multirun tell apart."""
    return "/".join(Path(run_dir).resolve().parts[-2:])


class Logger(Callback):
    """The shared part: when to log and what; a backend implements ``open``, ``log`` and
    ``close``."""

    option = ""  # the option's name, kept in the state

    def __init__(self, every_n_updates: int) -> None:
        self.every = check_int("logger.every_n_updates", every_n_updates, 1)
        self.run_id: str | None = None  # the backend's run, kept across resumes
        self.resumed_at: int | None = None  # the update of the checkpoint resumed from
        self.update = 0  # the last update done, saved with each checkpoint
        self.active = False  # rank 0 only, once started

    def start(self, run: Run, run_dir: Path) -> None:
        self.active = distributed.is_main()
        if not self.active:
            return
        try:
            self.open(Path(run_dir), (Path(run_dir) / "config.yaml").read_text())
        except ConfigError:
            raise
        except Exception as e:  # the backend's own (not logged in, no server): one line
            reason = f"could not start: {type(e).__name__}: {first_line(e)}"
            raise ConfigError("logger", self.option, reason) from None

    def after_step(self, run: Run, update: int, loss: Tensor) -> None:
        self.update = update
        if self.active and update % self.every == 0:
            lr = float(run.optimizer.param_groups[0]["lr"])
            self.log({"update/loss": loss.item(), "update/lr": lr}, update)

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        if self.active:
            values = numeric_columns(row)
            self.log({f"epoch/{k}": v for k, v in values.items()}, int(row["updates"]))

    def finish(self, run_dir: Path, status: str) -> None:
        if self.active:
            self.close(status)
            self.active = False

    def state_dict(self) -> dict[str, Any]:
        return {"logger": self.option, "run_id": self.run_id, "update": self.update}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The config check makes the checkpoint's logger this one; a state of another is ignored.
        if state.get("logger") == self.option:
            self.run_id = state.get("run_id")
            self.update = self.resumed_at = int(state.get("update", 0))

    def open(self, run_dir: Path, config_yaml: str) -> None:
        raise NotImplementedError

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        raise NotImplementedError


class TensorBoardLogger(Logger):
    """torch.utils.tensorboard's SummaryWriter in run_dir/tensorboard."""

    option = "tensorboard"

    def open(self, run_dir: Path, config_yaml: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run appends a new events file to the same folder; purge_step makes
        # TensorBoard drop the earlier files' events from that update on, which a crashed
        # process logged after its last checkpoint and this one logs again.
        purge = None if self.resumed_at is None else self.resumed_at + 1
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge)
        # Indented: a Markdown code block, as the text dashboard renders it.
        text = "\n".join("    " + line for line in config_yaml.splitlines())
        self.writer.add_text("config", text, global_step=self.resumed_at or 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def end_epoch(self, run: Run, epoch: int, row: dict[str, Any]) -> None:
        super().end_epoch(run, epoch, row)
        if self.active:
            self.writer.flush()  # an epoch's events on disk, as metrics.csv

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, global_step=self.update)
        self.writer.close()


class WandbLogger(Logger):
    """A Weights & Biases run with its files in run_dir/wandb; its id is kept for resumes."""

    option = "wandb"

    def __init__(self, every_n_updates: int, *, project: str, entity: str | None = None,
                 group: str | None = None, tags: list[str] | None = None,
                 mode: str | None = None, run_name: str | None = None) -> None:  # fmt: skip
        super().__init__(every_n_updates)
        if mode not in WANDB_MODES:
            valid = ", ".join(str(m).replace("None", "null") for m in WANDB_MODES)
            raise ConfigError("logger.mode", mode, f"must be one of {valid}")
        self.init_kwargs = {
            "project": project,
            "entity": entity,
            "group": group,
            "tags": list(tags or []),
            "mode": mode,
            "name": run_name,
        }

    def open(self, run_dir: Path, config_yaml: str) -> None:
        import wandb
        import yaml

        fresh = self.run_id is None
        if fresh:
            self.run_id = secrets.token_hex(4)  # wandb's own ids are 8 characters too
        self.run = wandb.init(
            **{**self.init_kwargs, "name": self.init_kwargs["name"] or run_label(run_dir)},
            id=self.run_id,
            resume="allow",  # the same id continues the run (online and offline)
            dir=str(run_dir),
            config=yaml.safe_load(config_yaml) if fresh else None,
        )
        # One x axis, the update count, as Lightning's WandbLogger does with its global step:
        # wandb's own step only grows, so a resumed run would otherwise be refused its steps.
        self.run.define_metric("update")
        self.run.define_metric("*", step_metric="update")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "update": step})

    def close(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MlflowLogger(Logger):
    """An MLflow run; by default in a file store in run_dir/mlruns. Its id is kept for
    resumes."""

    option = "mlflow"

    def __init__(self, every_n_updates: int, *, experiment_name: str,
                 tracking_uri: str | None = None, run_name: str | None = None) -> None:  # fmt: skip
        super().__init__(every_n_updates)
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.run_name = run_name

    def open(self, run_dir: Path, config_yaml: str) -> None:
        import yaml
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or (run_dir / MLFLOW_DIR).resolve().as_uri()
        if uri.startswith("file:"):
            # mlflow >= 3.7 refuses file stores unless asked (it wants a database); the
            # run's own folder is the point of this default, so ask for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(self.experiment_name)
            )
            name = self.run_name or run_label(run_dir)
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            params = [
                Param(k, str(v)[:MLFLOW_PARAM_CHARS])
                for k, v in flatten(yaml.safe_load(config_yaml)).items()
            ]
            for i in range(0, len(params), MLFLOW_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_BATCH])
            self.client.log_text(self.run_id, config_yaml, "config.yaml")
        else:
            try:
                self.client.update_run(self.run_id, status="RUNNING")
            except Exception as e:  # mlflow raises its own MlflowException for a missing run
                raise ConfigError(
                    "logger.tracking_uri", uri, f"has no run {self.run_id} to continue: {e}"
                ) from None

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # mlflow refuses non-finite values on some backends: a diverged loss is logged as nan.
        metrics = [
            Metric(k, v if math.isfinite(v) else math.nan, now, step) for k, v in values.items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self.client.set_tag(self.run_id, "status", status)
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FINISHED"))


def csv() -> None:
    """``logger=csv``: no logger callback; metrics.csv is written by every run."""
    return None


def tensorboard(every_n_updates: int = 50) -> TensorBoardLogger:
    require("tensorboard", "tensorboard")
    return TensorBoardLogger(every_n_updates)


def wandb(
    every_n_updates: int = 50,
    project: str = "trainrepro",
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    run_name: str | None = None,
) -> WandbLogger:
    require("wandb", "wandb")
    return WandbLogger(
        every_n_updates,
        project=project,
        entity=entity,
        group=group,
        tags=tags,
        mode=mode,
        run_name=run_name,
    )


def mlflow(
    every_n_updates: int = 50,
    experiment_name: str = "trainrepro",
    tracking_uri: str | None = None,
    run_name: str | None = None,
) -> MlflowLogger:
    require("mlflow", "mlflow")
    return MlflowLogger(
        every_n_updates,
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        run_name=run_name,
    )

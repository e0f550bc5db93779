"""Checkpoints hold tensors and plain containers only and are read with weights_only=True:
a file carrying code is refused, a broken or foreign one is named in one line (exit 2), and
the run directory is left exactly as it was."""

from __future__ import annotations

import hashlib
import pickle
import zipfile

import pytest
import torch
from support import TINY, cli, tiny_cfg

from trainrepro.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError

RUN = (*[o for o in TINY if not o.startswith("epochs")], "epochs=2")


class Payload:
    """Unpickling this would call ``print`` (a stand-in for any code a file could carry)."""

    def __reduce__(self):
        return (print, ("pwned: code ran while loading a checkpoint",))


def tree_digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def interrupted_run(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_cfg(*RUN), run_dir, stop_after_epoch=1)
    return run_dir


def test_checkpoint_holds_only_tensors_and_plain_containers(interrupted_run):
    ckpt = torch.load(interrupted_run / CHECKPOINT_NAME, weights_only=True)
    assert isinstance(ckpt["config_yaml"], str) and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert load_checkpoint(interrupted_run / CHECKPOINT_NAME)["config"]["epochs"] == 2


def test_a_pickle_carrying_a_callable_is_refused(interrupted_run, capsys):
    path = interrupted_run / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    ckpt["rng"]["payload"] = Payload()
    torch.save(ckpt, path)
    with pytest.raises(ConfigError, match="refused: it holds objects other than tensors") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert "pwned" not in capsys.readouterr().out


def test_a_plain_pickle_file_is_refused_too(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match="checkpoint=") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def foreign_model(path):
    """Another run's checkpoint (a wider model) copied over this one's."""
    other = path.parent.parent / "other"
    train(tiny_cfg(*RUN, "model.width=2"), other, stop_after_epoch=1)
    ckpt = torch.load(other / CHECKPOINT_NAME, weights_only=True)
    ckpt["config_yaml"] = torch.load(path, weights_only=True)["config_yaml"]
    torch.save(ckpt, path)


def not_a_checkpoint(path):
    torch.save({"weights": torch.zeros(3)}, path)


def code_carrying(path):
    ckpt = torch.load(path, weights_only=True)
    ckpt["progress"] = Payload()
    torch.save(ckpt, path)


BROKEN = {
    "truncated": (truncate, "unreadable, truncated"),
    "another model": (foreign_model, "holds a different model than the config's: "),
    "not a checkpoint": (not_a_checkpoint, "not a trainrepro checkpoint (no model"),
    "carries code": (code_carrying, "refused"),
}


@pytest.mark.parametrize(("damage", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_checkpoint_is_one_line_exit_2_and_run_dir_untouched(
    interrupted_run, tmp_path, damage, message
):
    damage(interrupted_run / CHECKPOINT_NAME)
    before = tree_digest(interrupted_run)
    result = cli(*RUN, f"hydra.run.dir={interrupted_run}", "resume=true", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: checkpoint={interrupted_run / CHECKPOINT_NAME}: ")
    assert message in lines[0]
    assert "pwned" not in result.stdout
    assert tree_digest(interrupted_run) == before


def test_checkpoint_written_by_a_zip_tool_is_not_trusted(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match="checkpoint="):
        load_checkpoint(path)


def test_checkpoint_from_before_added_keys_still_resumes(interrupted_run):
    """Keys added since (engine.checkpoint.ADDED_KEYS) take the value older runs implied."""
    import yaml

    path = interrupted_run / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    config = yaml.safe_load(ckpt["config_yaml"])
    del config["normalization"]["weight_standardization"], config["schedule"]["reference_batch"]
    del config["checkpoint_every"]
    ckpt["config_yaml"] = yaml.safe_dump(config)
    torch.save(ckpt, path)
    assert train(tiny_cfg(*RUN, "resume=true"), interrupted_run)["status"] == "completed"
    with pytest.raises(ConfigError, match=r"^normalization.weight_standardization=True: differs"):
        train(
            tiny_cfg(*RUN, "resume=true", "normalization.weight_standardization=true"),
            interrupted_run,
        )

"""``make bench`` end to end on a tiny setting, and the speed keys it measures (precision=bf16
on CPU, channels_last, compile) composing, validating and training. No timing is asserted:
the numbers depend on the machine and its load."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support import tiny_cfg

from trainrepro.bench.__main__ import main as bench_main
from trainrepro.engine import build
from trainrepro.engine.train import train
from trainrepro.errors import ConfigError

VARIANT_COLUMNS = {
    "model",
    "variant",
    "precision",
    "channels_last",
    "compile",
    "images_per_s",
    "speedup_vs_fp32",
    "gflop_per_image",
    "gflop_per_step",
    "peak_precision",
    "tflop_per_s",
    "mfu",
    "mfu_bf16",
    "compile_s",
    "steps_per_window",
    "windows_s_per_step",
}
TRAINER_COLUMNS = {
    "model",
    "variant",
    "trainer_images_per_s",
    "bare_images_per_s",
    "trainer_vs_bare",
    "meets_target",
    "gflop_per_image",
    "peak_precision",
    "trainer_tflop_per_s",
    "trainer_mfu",
    "trainer_mfu_bf16",
    "bare_tflop_per_s",
    "bare_mfu",
    "bare_mfu_bf16",
    "steps_per_window",
    "trainer_windows_s_per_step",
    "bare_windows_s_per_step",
}
PIPELINE_COLUMNS = {
    "model",
    "device_images_per_s",
    "dataloader_images_per_s",
    "ratio",
    "gflop_per_image",
    "peak_precision",
    "device_tflop_per_s",
    "device_mfu",
    "device_mfu_bf16",
    "dataloader_tflop_per_s",
    "dataloader_mfu",
    "dataloader_mfu_bf16",
    "device_windows",
    "dataloader_windows",
}
ACCURACY_COLUMNS = {
    "variant",
    "run_dir",
    "status",
    "epochs",
    "final_test_acc",
    "best_test_acc",
    "final_train_loss",
    "test_acc_per_epoch",
    "train_seconds",
    "epoch_train_seconds",
    "train_time_vs_first",
}
CPU_BF16 = build.cpu_has_native_bf16()
NO_CPU_BF16 = "this CPU has no bf16 units, so precision=bf16 is refused on it"


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "result.json"
    variants = "fp32,channels_last,bf16,bf16+cl" if CPU_BF16 else "fp32,channels_last"
    accuracy_variants = "fp32,bf16+cl" if CPU_BF16 else "fp32,channels_last"
    result = bench_main(
        [
            "--device=cpu",
            "--data=",
            "--train-size=256",
            "--batch-size=16",
            "--windows=2",
            "--steps=1",
            "--workers=0",
            "--peak-size=64",
            "--models=lenet5",
            "--pipeline-models=lenet5",
            f"--variants={variants}",
            "--sections=variants,trainer,pipeline,accuracy",
            f"--accuracy-variants={accuracy_variants}",
            "--accuracy-overrides=model=lenet5 schedule=constant epochs=1 batch_size=32 device=cpu"
            " progress=false",
            f"--accuracy-dir={tmp_path / 'acc'}",
            f"--out={out}",
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    meta = result["meta"]
    assert meta["data"] == "synthetic" and meta["batch_size"] == 16
    # The peaks the MFUs divide by, measured in this run: bf16's where the CPU has its units.
    peaks = meta["peak_tflop_per_s"]
    assert meta["peak_size"] == 64 and set(peaks) == ({"fp32", "bf16"} if CPU_BF16 else {"fp32"})
    assert all(_positive(t) for t in peaks.values())

    rows = result["variants"]
    assert [r["variant"] for r in rows] == variants.split(",")
    for r in rows:
        assert set(r) == VARIANT_COLUMNS
        assert _positive(r["images_per_s"]) and _positive(r["speedup_vs_fp32"])
        assert _positive(r["tflop_per_s"]) and _positive(r["gflop_per_step"])
        assert r["gflop_per_step"] == pytest.approx(16 * r["gflop_per_image"])
        assert r["tflop_per_s"] == pytest.approx(r["images_per_s"] * r["gflop_per_image"] / 1e3)
        assert r["peak_precision"] == r["precision"]  # on a CPU: no TF32
        assert r["mfu"] == pytest.approx(r["tflop_per_s"] / peaks[r["precision"]])
        assert r["mfu_bf16"] == (
            pytest.approx(r["tflop_per_s"] / peaks["bf16"]) if CPU_BF16 else None
        )
        assert len(r["windows_s_per_step"]) == 2 and r["compile_s"] is None
    assert rows[0]["speedup_vs_fp32"] == 1.0
    assert len({r["gflop_per_step"] for r in rows}) == 1  # layout and precision: same FLOPs

    (trainer,) = result["trainer"]
    assert set(trainer) == TRAINER_COLUMNS
    assert _positive(trainer["trainer_vs_bare"]) and _positive(trainer["bare_images_per_s"])
    assert trainer["meets_target"] == (trainer["trainer_vs_bare"] >= meta["trainer_target"])
    assert trainer["gflop_per_image"] == rows[0]["gflop_per_image"]  # the cached count
    assert _positive(trainer["trainer_mfu"]) and _positive(trainer["bare_mfu"])

    (pipeline,) = result["pipeline"]
    assert set(pipeline) == PIPELINE_COLUMNS and _positive(pipeline["ratio"])
    assert _positive(pipeline["device_mfu"]) and _positive(pipeline["dataloader_mfu"])

    accuracy = result["accuracy"]
    assert [r["variant"] for r in accuracy] == accuracy_variants.split(",")
    for r in accuracy:
        assert set(r) == ACCURACY_COLUMNS and r["status"] == "completed" and r["epochs"] == 1
        assert 0 <= r["final_test_acc"] <= 100 and _positive(r["train_seconds"])
    assert accuracy[0]["train_time_vs_first"] == 1.0

    printed = capsys.readouterr().out
    for heading in (
        "dense matmul peak",
        "x fp32",
        "TFLOP/s",
        "MFU bf16",
        "compile s",
        "bare loop",
        "DataLoader",
        "final acc",
    ):
        assert heading in printed


def test_bench_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        bench_main(["--variants=fp32,fp8"])
    assert "--variants: unknown fp8" in capsys.readouterr().err


@pytest.mark.skipif(not CPU_BF16, reason=NO_CPU_BF16)
def test_bf16_on_cpu_trains(tmp_path):
    cfg = tiny_cfg("epochs=1", "precision=bf16", "channels_last=true")
    run = build.build_run(cfg)
    assert run.autocast_dtype is torch.bfloat16 and run.scaler is None
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert math.isfinite(summary["final"]["train_loss"])


def test_bf16_refused_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError) as e:
        build.check_top_level(tiny_cfg("precision=bf16"))
    assert str(e.value).startswith("precision=bf16: ") and "\n" not in str(e.value)


def test_fp16_refused_on_cpu():
    with pytest.raises(ConfigError, match=r"^precision=fp16: .*CUDA"):
        build.check_top_level(tiny_cfg("precision=fp16"))


@pytest.mark.parametrize("key", ["channels_last", "compile"])
def test_speed_keys_must_be_bools(key):
    with pytest.raises(ConfigError, match=rf"^{key}=1: must be true or false"):
        build.check_top_level(tiny_cfg(f"{key}=1"))


def test_channels_last_model_and_inputs(tmp_path):
    cfg = tiny_cfg("epochs=1", "channels_last=true")
    run = build.build_run(cfg)
    convs = [m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last)
        for c in convs
        if c.kernel_size != (1, 1)
    )
    seen = []
    convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    run.model(torch.randn(2, 3, 32, 32))  # an NCHW batch, as the loaders make
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"


def test_channels_last_computes_the_same_function():
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build.apply_speed_options(
            torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)),
            channels_last=channels_last,
        )
        outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_compile_trains_and_keeps_state_dict_keys(tmp_path):
    cfg = tiny_cfg("epochs=1", "compile=true", "dataset.num_train=128", "dataset.num_test=64")
    plain = build.build_run(tiny_cfg("epochs=1"))
    compiled = build.build_run(cfg)
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert math.isfinite(summary["final"]["train_loss"])

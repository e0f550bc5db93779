"""What ``make bench``'s MFU is made of: FLOPs counted per update (pinned against hand counts),
the measured matmul peak, the MFU arithmetic, the trainer's target mark, and ``--concurrent``.
No timing is asserted beyond being a positive number."""

from __future__ import annotations

import math

import pytest
import torch

from trainrepro.bench import peak, speed
from trainrepro.bench.__main__ import print_trainer
from trainrepro.bench.concurrent import bench_concurrent
from trainrepro.bench.flops import count_update_flops, mfu, percent, train_step_flops, utilisation
from trainrepro.data.builders import synthetic
from trainrepro.engine.build import cpu_has_native_bf16

B, IN, HID, OUT = 4, 5, 6, 3  # batch, input, hidden and output widths


def _labels(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


def test_linear_layers_counted_as_they_run():
    # A matmul of (M, K) by (K, N) is 2*M*N*K FLOPs. Backward costs two more matmuls, the
    # input's gradient and the weight's, except for the first layer, whose input needs no
    # gradient: 2x its forward, 3x for the others (not the rule-of-thumb 3x throughout).
    linear = torch.nn.Linear(IN, OUT)
    assert train_step_flops(linear, torch.randn(B, IN), _labels(B)) == 2 * (2 * B * IN * OUT)
    mlp = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    assert train_step_flops(mlp, torch.randn(B, IN), _labels(B)) == 2 * (2 * B * IN * HID) + 3 * (
        2 * B * HID * OUT
    )
    assert linear.weight.grad is None  # counted on a copy


def test_convolution_counted_as_its_matmul():
    # A 3x3 convolution of 3 -> 4 channels on 6x6 images, no padding: 4x4 outputs, each
    # 2 * 3 * 3 * 3 FLOPs per output channel; the first layer again 2x its forward.
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    forward = 2 * B * 4 * (4 * 4) * (3 * 3 * 3)
    assert train_step_flops(conv, torch.randn(B, 3, 6, 6), _labels(B)) == 2 * forward
    # Norm layers and activations are not matmuls, so they add nothing.
    normed = torch.nn.Sequential(conv[0], torch.nn.BatchNorm2d(4), torch.nn.ReLU(), conv[1])
    assert train_step_flops(normed, torch.randn(B, 3, 6, 6), _labels(B)) == 2 * forward


@pytest.mark.parametrize("channels_last", [False, True])
def test_meta_count_equals_the_count_on_real_tensors(channels_last):
    data = synthetic(num_train=64, num_test=16)
    model = speed.build_model("lenet5", data, torch.device("cpu"))
    x = torch.randn(8, data.in_channels, data.image_size, data.image_size)
    real = train_step_flops(model, x, _labels(8))
    shape = (data.in_channels, data.image_size, data.image_size)
    meta = count_update_flops(model, 8, shape, data.num_classes, channels_last=channels_last)
    assert meta == real > 0
    assert next(model.parameters()).device.type == "cpu"  # the model itself stays put


def test_flops_per_image_counted_once_per_model_batch_and_layout():
    data = synthetic(num_train=64, num_test=16)
    speed._flops_per_image.cache_clear()
    first = speed.flops_per_image("lenet5", data, 16, channels_last=False)
    assert speed.flops_per_image("lenet5", data, 16, channels_last=False) == first
    assert speed._flops_per_image.cache_info().hits == 1
    assert speed.flops_per_image("lenet5", data, 16, channels_last=True) == first
    assert speed._flops_per_image.cache_info().misses == 2  # its own key, the same count


def test_mfu_arithmetic_on_the_issues_numbers():
    # Issue 20 on an H200: WRN-16-4 fp32 22.0k img/s = 51.8 TFLOP/s = 6.5% of the bf16 peak
    # (793 TFLOP/s); fp32 convolutions run in TF32 there (436 TFLOP/s).
    gflop_per_image = 51.8e3 / 22.0e3
    row = utilisation(22.0e3, gflop_per_image, "tf32", {"tf32": 436.0, "bf16": 793.0}, "x_")
    assert row == {
        "x_tflop_per_s": pytest.approx(51.8),
        "x_mfu": pytest.approx(51.8 / 436.0),
        "x_mfu_bf16": pytest.approx(51.8 / 793.0),
    }
    assert percent(row["x_mfu_bf16"]) == "6.5%"
    assert utilisation(100.0, 1.0, "fp32", {})["mfu"] is None  # no peak measured, no MFU
    assert mfu(1.0, None) is None and mfu(1.0, 4.0) == 0.25 and percent(None) == ""


def test_peak_is_a_positive_number_at_a_tiny_size():
    cpu = torch.device("cpu")
    tflops = peak.matmul_tflops(cpu, "fp32", 32, seconds=0.01)
    assert math.isfinite(tflops) and tflops > 0
    peaks = peak.measure_peaks(cpu, ["fp32", "tf32", "fp32", "bf16"], 32, seconds=0.01)
    # TF32 is CUDA's; bf16 only where this CPU has its units (else it would be emulated).
    assert list(peaks) == (["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"])
    assert all(t > 0 for t in peaks.values())
    with pytest.raises(ValueError, match="fp8"):
        peak.matmul_tflops(cpu, "fp8", 32)


def test_each_precision_divides_by_its_own_peak(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert peak.peak_precision("fp32", cpu) == "fp32"
    assert peak.peak_precision("bf16", cpu) == peak.peak_precision("bf16", cuda) == "bf16"
    # fp32 training on CUDA runs its convolutions as cuDNN is allowed: TF32 by default.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert peak.peak_precision("fp32", cuda) == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert peak.peak_precision("fp32", cuda) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_cuda_matmul_precision_set_for_the_peak_then_restored(precision):
    before = torch.backends.cuda.matmul.allow_tf32
    with peak._fp32_matmuls_as(precision, torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 == (precision == "tf32")
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_trainer_below_target_is_marked_not_failed(capsys):
    row = {
        "trainer_images_per_s": 90.0,
        "bare_images_per_s": 100.0,
        "trainer_mfu": 0.09,
        "bare_mfu": 0.1,
        "peak_precision": "fp32",
    }
    rows = [
        {**row, "model": "slow", "trainer_vs_bare": 0.9, "meets_target": False},
        {**row, "model": "fast", "trainer_vs_bare": 0.99, "meets_target": True},
    ]
    print_trainer(rows)
    lines = capsys.readouterr().out.splitlines()
    slow, fast = (next(ln for ln in lines if ln.startswith(m)) for m in ("slow", "fast"))
    assert f"*<{speed.TRAINER_TARGET}" in slow and "*" not in fast
    assert "9.0%" in slow and "10.0%" in slow


def test_concurrent_processes_against_one_alone():
    data = synthetic(num_train=64, num_test=16)
    timing = dict(device=torch.device("cpu"), batch_size=8, windows=2, steps=2, window_seconds=0)
    one, row = bench_concurrent([1, 2], ["lenet5"], "fp32", data, timing)
    assert one["processes"] == 1 and one["alone_images_per_s"] == row["alone_images_per_s"]
    assert row["processes"] == 2 and len(row["per_process_images_per_s"]) == 2
    assert row["threads_per_process"] == max(1, torch.get_num_threads() // 2)
    assert all(r > 0 for r in row["per_process_images_per_s"]) and row["alone_images_per_s"] > 0
    assert row["concurrent_images_per_s"] == pytest.approx(sum(row["per_process_images_per_s"]))
    assert row["concurrent_vs_alone"] == pytest.approx(
        row["concurrent_images_per_s"] / row["alone_images_per_s"]
    )


@pytest.mark.parametrize("bad", ["0", "2,x", "-1"])
def test_concurrent_counts_are_checked_in_one_line(bad, capsys):
    from trainrepro.bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["--concurrent", bad, "--sections", "", "--peak-size", "0"])
    assert f"--concurrent={bad}: give process counts >= 1" in capsys.readouterr().err

"""scripts/bench_profiles.py: every case composes into a valid run config, and the script turns
the benchmark's results into its table and summary (the training itself is faked here: the
accuracy section's own end-to-end test is in test_bench.py)."""

from __future__ import annotations

import json

import pytest

from trainrepro.bench.speed import compose_config
from trainrepro.engine.build import check_config
from trainrepro.reproduce.scripts import load_script

profiles = load_script("bench_profiles")


@pytest.mark.parametrize("case", sorted(profiles.CASES))
def test_every_case_is_a_valid_config(case):
    cfg = compose_config(
        [*profiles.case_overrides(case), "dataset=cifar10", "dataset.root=unused", "device=cpu"]
    )
    check_config(cfg)
    assert cfg.epochs == 2


def test_table_and_summary_from_the_benchmark_results(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_bench(argv):
        calls.append(argv)
        return {
            "accuracy": [
                {"variant": "fp32", "epoch_train_seconds": 6.0, "final_test_acc": 20.0},
                {"variant": "bf16+cl", "epoch_train_seconds": 2.0, "final_test_acc": 21.0},
            ]
        }

    monkeypatch.setattr(profiles.bench, "main", fake_bench)
    out = tmp_path / "new" / "dir"
    rc = profiles.main(["--data", "d", "--cases", "radam_b32,gn_ws_b2", "--out-dir", str(out)])
    assert rc == 0
    assert len(calls) == 2
    overrides = next(a for a in calls[0] if a.startswith("--accuracy-overrides="))
    assert "+experiment=radam/radam" in overrides and "schedule.milestones=[1]" in overrides
    assert f"--out={out / 'radam_b32.json'}" in calls[0]
    rows = json.loads((out / "summary.json").read_text())
    assert [r["case"] for r in rows] == ["radam_b32", "gn_ws_b2"]
    assert rows[0]["speedup"] == pytest.approx(3.0)
    assert "3.00x" in capsys.readouterr().out


def test_unknown_case_is_refused(capsys):
    with pytest.raises(SystemExit):
        profiles.main(["--data", "d", "--cases", "nope"])
    assert "unknown nope" in capsys.readouterr().err

"""End to end on real CIFAR-10 (the JPEG folders of ../shared/data): far above chance.

About 30 s on 2 CPU cores once the decoded images are cached (the first decode of the 60,000
JPEGs adds about 10 s).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support import SHARED_DATA, cli

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "cifar10").is_dir(),
    reason=f"real CIFAR-10 not found under {SHARED_DATA} (set TRAINREPRO_DATA)",
)


def test_lenet5_on_real_cifar10_learns(tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "model=lenet5",
        "dataset=cifar10",
        f"dataset.root={SHARED_DATA}",
        "dataset.train_size=20000",
        "dataset.val_fraction=0.1",
        "optimizer.lr=0.05",
        "schedule=cosine",
        "epochs=5",
        "batch_size=64",
        "device=cpu",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "read from the JPEG image folders" in result.stdout
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 5
    assert metrics["updates"].iloc[-1] == 5 * (18000 // 64)
    final = metrics.iloc[-1]
    # Chance is 10%; this run reaches about 50%.
    assert final["test_acc"] > 40.0 and final["val_acc"] > 40.0
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final"]["test_acc"] == pytest.approx(final["test_acc"])

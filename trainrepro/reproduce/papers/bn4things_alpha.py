"""Inference example weighting for the bn4things report (Summers & Dinneen 2020, Sec. 3): no
run of its own. bn-alpha
(trainrepro/analysis/bn_alpha.py) runs on each finished baseline and combined
run, alpha picked on its validation split; the rows are kept in ``bn_alpha.csv`` beside
runs.csv, each with the SHA-256 of the checkpoint it came from, so a row is computed once per
checkpoint and again when a run directory holds a different one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainrepro.reproduce.data import file_digest
from trainrepro.reproduce.paper import Results

ALPHA_FILE = "bn_alpha.csv"
ALPHAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # bn_alpha.DEFAULT_ALPHAS
EW_PRESETS = ("baseline", "combined")


def _alpha_rows(run_root: Path, run: str) -> list[dict[str, object]]:
    from trainrepro.analysis.bn_alpha import bn_alpha

    rep = bn_alpha(run_root / run, list(ALPHAS))
    base = {
        "run_dir": run, "checkpoint_sha256": file_digest(run_root / run / "checkpoint.pt"),
        "split": rep["split"], "chosen_alpha": rep["chosen_alpha"],
        "test_acc_before": rep["test"]["before"]["acc"],
        "test_acc_after": rep["test"]["after"]["acc"],
        "test_loss_before": rep["test"]["before"]["loss"],
        "test_loss_after": rep["test"]["after"]["loss"],
    }  # fmt: skip
    return [{**base, "alpha": r["alpha"], "sel_acc": r["acc"], "sel_loss": r["loss"]}
            for r in rep["selection"]]  # fmt: skip


def attach_alpha_rows(res: Results) -> None:
    """bn-alpha rows of the finished baseline and combined runs into ``res.extras["alpha"]``:
    read from bn_alpha.csv, computed (and saved) for every checkpoint not in it yet."""
    saved = res.out / ALPHA_FILE
    rows = pd.read_csv(saved) if saved.is_file() else pd.DataFrame()
    if res.run_root is not None:
        final = res.final()
        want = final[final["preset"].isin(EW_PRESETS) & (final["status"] == "completed")]
        digests = {r: file_digest(res.run_root / r / "checkpoint.pt") for r in want["run_dir"]
                   if (res.run_root / r / "checkpoint.pt").is_file()}  # fmt: skip
        if len(rows):  # rows of another checkpoint (the run was redone) are stale
            made_from = rows.get("checkpoint_sha256", pd.Series("", index=rows.index))
            same = rows["run_dir"].map(digests) == made_from
            rows = rows[~rows["run_dir"].isin(list(digests)) | same]
        have = set(rows["run_dir"]) if len(rows) else set()
        todo = [r for r in digests if r not in have]
        if todo:
            print(f"bn-alpha on {len(todo)} run(s) ...", flush=True)
            new = pd.DataFrame([row for r in todo for row in _alpha_rows(res.run_root, r)])
            rows = pd.concat([rows, new], ignore_index=True) if len(rows) else new
            res.out.mkdir(parents=True, exist_ok=True)
            rows.to_csv(saved, index=False)
    if len(rows):
        res.extras["alpha"] = rows
        res.notes.append(f"Inference example weighting: bn-alpha rows in `{ALPHA_FILE}`, alpha "
                         f"picked on the runs' validation split among {list(ALPHAS)}.")  # fmt: skip


def alpha_summary(res: Results) -> pd.DataFrame:
    """One row per run bn-alpha was applied to: chosen alpha, selection and test accuracies."""
    rows = res.extras.get("alpha")
    if rows is None or len(rows) == 0:
        return pd.DataFrame()
    out = []
    for run, sub in rows.groupby("run_dir", sort=True):
        zero = sub[sub["alpha"] == 0.0]["sel_acc"]
        first = sub.iloc[0]
        chosen = sub[sub["alpha"] == first["chosen_alpha"]]["sel_acc"]
        out.append({
            "run_dir": run, "preset": run.split("/")[0], "alpha": float(first["chosen_alpha"]),
            "val_before": float(zero.iloc[0]), "val_after": float(chosen.iloc[0]),
            "test_before": float(first["test_acc_before"]),
            "test_after": float(first["test_acc_after"]),
        })  # fmt: skip
    return pd.DataFrame(out)

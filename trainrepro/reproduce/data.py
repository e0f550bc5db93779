"""Load a paper's runs, from their run directories or from a committed ``runs.csv``, into the
one per-epoch table every check, figure and table reads (:class:`Results`)."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from trainrepro.analysis.curves import collect
from trainrepro.engine.records import portable_path
from trainrepro.errors import ConfigError
from trainrepro.reproduce.paper import Paper, Results

RUNS_CSV = "runs.csv"


def _depth(layout: str) -> int:
    return layout.count("/") + 1


def describe(layout: str) -> str:
    """``{preset}/lr{lr:g}/seed{seed}`` -> ``<preset>/lr<lr>/seed<seed>``, for messages."""
    return re.sub(r"{(\w+)[^}]*}", r"<\1>", layout)


def load_run_dirs(paper: Paper, root: Path) -> pd.DataFrame:
    """Every run under ``root`` (runs/<name>); ``run_dir`` relative to it, as in runs.csv."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run without metrics rows yet is listed as such
        df = collect([root])
    rel = df["run_dir"].map(lambda d: Path(d).resolve().relative_to(root.resolve()).as_posix())
    bad = rel[rel.str.count("/") + 1 != _depth(paper.layout)]
    if len(bad):
        raise ConfigError(
            "runs", bad.iloc[0], f"expected {root}/{describe(paper.layout)} run directories"
        )
    df["run_dir"] = rel
    return df


def load_csv(paper: Paper, path: Path, name: str) -> pd.DataFrame:
    """A runs.csv written by an earlier report; ``run_dir`` made relative to runs/<name>.

    Older files (smith18's) have no ``run_dir``: it is rebuilt from the declared layout.
    """
    df = pd.read_csv(path)
    if "run_dir" in df:
        # "runs/radam-quick/adam/lr0.1/seed0" -> "adam/lr0.1/seed0", whatever the prefix was.
        depth = _depth(paper.layout)
        df["run_dir"] = df["run_dir"].map(lambda d: "/".join(Path(d).parts[-depth:]))
    else:
        fields = re.findall(r"{(\w+)", paper.layout)
        missing = [f for f in fields if f not in df]
        if missing:
            raise ConfigError("runs.csv", str(path), f"has neither run_dir nor {missing}")
        df["run_dir"] = [paper.layout.format(**row) for row in df[fields].to_dict("records")]
    return df


def results(
    paper: Paper, profile: str, out: Path, run_root: Path | None, csv: Path | None = None
) -> Results:
    """The runs of ``paper`` at ``profile``: from ``csv`` when given, else from ``run_root``."""
    name = paper.result_name(profile)
    if csv is not None:
        df, source, root = load_csv(paper, csv, name), f"`{csv}` (run directories not read)", None
    else:
        assert run_root is not None
        df, root = load_run_dirs(paper, run_root), run_root
        source = f"the run directories in `{run_root}`"
    df["preset"] = df["run_dir"].map(lambda d: d.split("/", 1)[0])
    # A resumed run may have re-logged epochs; its latest row counts.
    df = df.drop_duplicates(["run_dir", "epoch"], keep="last").reset_index(drop=True)
    res = Results(paper, profile, name, df, root, out, source)
    if paper.prepare is not None:
        paper.prepare(res)
    return res


def write_runs_csv(res: Results) -> Path:
    """Every run's per-epoch metrics and flattened config, so results/ can be redrawn alone."""
    path = res.out / RUNS_CSV
    df = res.df.copy()
    df["run_dir"] = f"runs/{res.name}/" + df["run_dir"]
    for column in [c for c in df.columns if c == "dataset.root" or c.endswith(".root")]:
        df[column] = df[column].map(portable_path)
    df.sort_values(["run_dir", "epoch"], kind="stable").to_csv(path, index=False)
    return path


def save(fig: Figure, prefix: Path, tight: bool = False) -> list[Path]:
    """``prefix``.png and .pdf; no creation date, so unchanged data give unchanged files.
    ``tight`` crops to the drawn area (for figures without a constrained layout's margins)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_suffix(".png"), prefix.with_suffix(".pdf")]
    for path in paths:
        meta = {"CreationDate": None} if path.suffix == ".pdf" else {}
        fig.savefig(path, dpi=150, metadata=meta, bbox_inches="tight" if tight else None)
    return paths


def file_digest(path: Path) -> str:
    """SHA-256 of a file: ties a value derived from a run (kept beside its report) to the exact
    checkpoint it came from, so a re-run of the same run directory is never served stale rows."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

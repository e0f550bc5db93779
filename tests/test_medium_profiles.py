"""The medium profiles (issue 20, ask 5), read from the registry: every paper that declares
``medium`` is checked alike. Each of its runs composes and passes the preflight's config checks
(trainrepro/reproduce/preflight.py; device availability aside: no GPU here), trains on cuda on
the full training set (unless conf/profile/<paper>_medium.yaml says "not the full training
set" and why), for fewer epochs than the same run in the full profile, with at least the seeds
its claims need; and the estimate in the yaml's header counts its runs: the last "N training
images" there is within 10% of runs x epochs x images trained on, from the composed configs.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig
from support import CONF_DIR

from trainrepro.config import Composer
from trainrepro.engine.build import check_config
from trainrepro.reproduce.cli import run_specs
from trainrepro.reproduce.data import results
from trainrepro.reproduce.paper import NOT_RUN, Run
from trainrepro.reproduce.papers import PAPERS

MEDIUM = sorted(name for name, paper in PAPERS.items() if "medium" in paper.profiles)
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000}  # full training sets
ESTIMATE = re.compile(r"([\d,]+) training images")
PARTIAL = "not the full training set"  # the yaml's words when a profile trains on less


@functools.cache
def composer() -> Composer:
    return Composer()


@functools.cache
def configs(name: str, profile: str = "medium") -> tuple[tuple[Run, DictConfig], ...]:
    """Every run of the profile with its config, composed from the overrides reproduce gives
    it (for the full profile: the medium runs' own overrides without the medium profile).
    Runs that differ only in their seed share one config, as in the preflight."""
    paper = PAPERS[name]
    medium = paper.profiles["medium"]
    seen: dict[tuple[str, ...], DictConfig] = {}
    out = []
    for run, (_, overrides) in zip(medium.runs, run_specs(paper, medium, Path("runs")),
                                   strict=True):  # fmt: skip
        key = tuple(o for o in overrides if not o.startswith("seed=")
                    and (profile == "medium" or o not in medium.config))  # fmt: skip
        if key not in seen:
            seen[key] = composer()(list(key))
        out.append((run, seen[key]))
    return tuple(out)


def header(name: str) -> str:
    """The yaml's leading comment block, as one line of prose."""
    lines = (CONF_DIR / "profile" / f"{name}_medium.yaml").read_text().splitlines()
    comments = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    return " ".join(comments)


def images_trained(cfg: DictConfig) -> float:
    """Images a run trains on per epoch: the dataset's training set, less a subset, its
    validation hold-out or its held-out fold."""
    d = cfg.dataset
    n = d.split_test_train_size if d.get("split_test_set") else TRAIN_IMAGES[d.name]
    if d.get("train_size") is not None:
        n = d.train_size
    n *= 1.0 - float(d.get("val_fraction") or 0.0)
    if d.get("folds"):
        n *= (d.folds - 1) / d.folds
    return n


@pytest.mark.parametrize("name", MEDIUM)
def test_every_run_composes_and_passes_the_preflight_checks(name):
    checked = set()
    for run, cfg in configs(name):
        assert cfg.device == "cuda", f"{run.path}: device={cfg.device}"
        if id(cfg) in checked:  # another seed of a run already checked
            continue
        checked.add(id(cfg))
        here = copy.deepcopy(cfg)
        here.device = "cpu"  # the one check this machine cannot pass: CUDA is not here
        check_config(here)  # raises ConfigError naming the key


@pytest.mark.parametrize("name", MEDIUM)
def test_full_training_set_and_fewer_epochs_than_full(name):
    says_partial = PARTIAL in header(name).lower()
    full = dict(configs(name, "full"))
    for run, cfg in configs(name):
        d = cfg.dataset
        if d.get("train_size") is not None or d.get("split_test_set"):
            assert says_partial, f"{run.path}: trains on part of the training set, unsaid"
        assert cfg.epochs < full[run].epochs, (
            f"{run.path}: {cfg.epochs} epochs, full {full[run].epochs}"
        )


@pytest.mark.parametrize("name", MEDIUM)
def test_compared_cells_have_the_seeds_of_the_quick_profile(name):
    """A cell is a run's folder less its seed. Cells run at several seeds run at 3 or more (a
    t interval over 2 is all but useless), and the most seeds a quick cell has, a medium cell
    has too (5 where quick needs them for an equivalence within a point)."""
    paper = PAPERS[name]

    def seeds(profile: str) -> dict[str, int]:
        cells: dict[str, set[int]] = {}
        for run in paper.profiles[profile].runs:
            cells.setdefault(run.path.rsplit("/", 1)[0], set()).add(run.seed)
        return {cell: len(s) for cell, s in cells.items()}

    medium = seeds("medium")
    assert all(n >= 3 for n in medium.values() if n > 1), medium
    if any("medium" in claim.profiles for claim in paper.claims):
        assert max(medium.values()) >= max(max(seeds("quick").values()), 3)


@pytest.mark.parametrize("name", MEDIUM)
def test_the_yaml_estimate_counts_the_runs(name):
    text = header(name)
    assert "ESTIMATE" in text and "not a measured time" in text
    found = ESTIMATE.findall(text)
    assert found, f"{name}_medium.yaml: no 'N training images' total in its header"
    written = int(found[-1].replace(",", ""))
    counted = sum(cfg.epochs * images_trained(cfg) for _, cfg in configs(name))
    assert abs(written - counted) <= 0.1 * counted, (
        f"{name}_medium.yaml: its last count is {written:,} training images; its runs train on "
        f"{counted:,.0f} (runs x epochs x images trained on)")  # fmt: skip


# ---------------------------------------------------------------- papers' own medium choices
def by_preset(name: str) -> dict[str, list[DictConfig]]:
    out: dict[str, list[DictConfig]] = {}
    for run, cfg in configs(name):
        out.setdefault(run.path.split("/", 1)[0], []).append(cfg)
    return out


@pytest.mark.skipif("svrg" not in MEDIUM, reason="svrg declares no medium profile")
def test_svrg_medium_ends_sgd_and_svrg_at_equal_gradient_evaluations():
    """bn_gap compares at the gradient evaluations every run reaches: an SVRG epoch costs a
    snapshot pass every snapshot_every epochs and two gradients per batch (Johnson & Zhang)."""
    cells = by_preset("svrg")
    assert set(cells) == {f"resnet18_{n}_{o}" for n in ("bn", "none") for o in ("sgd", "svrg")}
    evals = set()
    for cell, cfgs in cells.items():
        for cfg in cfgs:
            assert cfg.model.depth == 18 and cfg.model.width == 64  # the report's ResNet-18
            assert cfg.dataset.name == "cifar10" and cfg.dataset.val_fraction == 0.05
            per_epoch = 1.0 if cell.endswith("sgd") else 2 + 1 / cfg.optimizer.snapshot_every
            evals.add(cfg.epochs * per_epoch)
    assert evals == {3.0}


@pytest.mark.skipif("largebatch" not in MEDIUM, reason="largebatch declares no medium profile")
def test_largebatch_medium_warms_up_the_scaled_presets_from_the_unscaled_lr():
    for run, cfg in configs("largebatch"):
        batch = cfg.batch_size
        assert batch in (128, 1024, 8192) and cfg.schedule.reference_batch == 128
        if run.preset == "sgd":
            assert not cfg.schedule.get("scale_lr_with_batch") and cfg.schedule.warmup_epochs == 0
        else:  # Goyal et al.: from lr 0.1 (the unscaled) to 0.1 x B / 128 over the warmup
            assert cfg.schedule.warmup_epochs == 1 < cfg.schedule.milestones[0]
            assert math.isclose(cfg.schedule.warmup_start_factor, 128 / batch)
        assert batch <= cfg.max_micro_batch or batch % cfg.max_micro_batch == 0
        assert cfg.max_micro_batch % cfg.normalization.ghost_batch_size == 0  # whole ghosts


# ---------------------------------------------------------------- each claim reaches a verdict
# Claims measured on artefacts that a runs.csv lacks: not run from a CSV, naming the artefact.
NEEDS_RUN_DIRS = {
    ("largebatch", "sharp_minima"): "checkpoint",
    ("radam", "gradient_distortion"): "grad_hist.pt",  # the gradient histograms
    ("bn4things", "ew_test"): "checkpoint",  # bn-alpha on the baseline runs
    ("sgdr", "snapshot_ensemble"): "snapshots",  # trainrepro ensemble on the SGDR runs
}
VERDICTS = MEDIUM


def synthetic_csv(name: str, path: Path) -> None:
    """Three epochs per declared medium run: the same gradient evaluations for every run,
    numbers that differ by cell and seed, every run stable; its overrides as config columns."""
    rows = []
    for run in PAPERS[name].profiles["medium"].runs:
        config = {k: float(v) for k, v in (o.split("=", 1) for o in run.overrides)}
        cell = run.path.rsplit("/", 1)[0]
        shift = (sum(map(ord, cell)) % 7) + 0.3 * run.seed  # by cell, then a spread by seed
        for epoch in (1, 2, 3):
            rows.append({
                "run_dir": f"runs/{name}-medium/{run.path}", "status": "completed",
                "epoch": epoch, "updates": 100 * epoch, "samples": 1000 * epoch,
                "grad_evals": 1000 * epoch, "train_loss": 1.0, "test_loss": 1.0 + shift / 10,
                "val_loss": 1.0 + shift / 20, "test_acc": 40.0 + shift + epoch,
                "agc_clipped_units": 0.5, "wall_seconds": 10.0 * epoch, "seed": run.seed,
                "batch_size": 128.0, **config,
                **({"val_acc": 40.0 + shift} if name == "bn4things" else {}),  # picks on it
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize("name", VERDICTS)
def test_every_medium_claim_reaches_a_verdict_over_three_seeds(name, tmp_path):
    paper = PAPERS[name]
    out = tmp_path / f"{name}-medium"
    out.mkdir()
    if name == "nfnet":  # the report's signal-propagation rows, kept so as not to compute them
        from trainrepro.reproduce.papers.nfnet import SPP_FILE, SPP_SEEDS

        spp = [{"seed": s, "variant": v, "block": b, "avg_sq_mean": 0.5 + b}
               for s in SPP_SEEDS for v in ("ResNet, no normalization", "BN-ResNet", "NF-ResNet")
               for b in (0, 1)]  # fmt: skip
        pd.DataFrame(spp).to_csv(out / SPP_FILE, index=False)
    synthetic_csv(name, tmp_path / "runs.csv")
    res = results(paper, "medium", out, None, tmp_path / "runs.csv")
    active = [c for c in paper.claims if "medium" in c.profiles]
    assert active
    for claim in active:
        verdict = claim.verdict(res)
        if (name, claim.key) in NEEDS_RUN_DIRS:
            assert verdict.status == NOT_RUN and NEEDS_RUN_DIRS[name, claim.key] in verdict.detail
            continue
        assert verdict.status != NOT_RUN, f"{claim.key}: {verdict.detail}"
        assert verdict.interval is not None and verdict.interval.n >= 3, claim.key
    for claim in paper.claims:  # a claim left to other profiles says which and why
        if claim not in active:
            assert claim.scale_note and claim.verdict(res).status == NOT_RUN


def test_svrg_medium_is_the_smallest():
    """scripts/gpu_check.sh runs svrg's medium profile end to end in 150 s: of every medium
    profile it trains on the fewest images."""
    assert "svrg" in MEDIUM

    def images(name: str) -> float:
        return sum(cfg.epochs * images_trained(cfg) for _, cfg in configs(name))

    assert images("svrg") == min(images(name) for name in MEDIUM)


# ---------------------------------------------------------------- small batches, and the papers
# of smith18, radam, gn and bn4things
UPDATES = re.compile(r"([\d,]+) updates at batch <= 32")


@pytest.mark.parametrize("name", MEDIUM)
def test_small_batch_runs_are_counted_in_updates(name):
    """Batches of 2-32 are bound by launch latency, not images: a header that counts them
    writes "N updates at batch <= 32", within 10% of epochs x floor(images / B) over them."""
    small = [cfg for _, cfg in configs(name) if cfg.batch_size <= 32]
    found = UPDATES.findall(header(name))
    if not small:
        assert not found, f"{name}: counts small-batch updates, but runs none"
        return
    assert found, f"{name}_medium.yaml: small-batch runs, but no 'N updates at batch <= 32'"
    counted = sum(cfg.epochs * (images_trained(cfg) // cfg.batch_size) for cfg in small)
    assert abs(int(found[-1].replace(",", "")) - counted) <= 0.1 * counted


def steps_at(cfg: DictConfig, *fractions: float) -> bool:
    return list(cfg.schedule.milestones) == pytest.approx([f * cfg.epochs for f in fractions])


@pytest.mark.skipif("smith18" not in MEDIUM, reason="smith18 declares no medium profile")
def test_smith18_medium_is_the_papers_setting_but_for_the_epochs():
    from trainrepro.reproduce.papers.smith18 import planned_updates

    for _, cfg in configs("smith18"):
        assert (cfg.model.depth, cfg.model.width) == (16, 4)  # WRN-16-4
        assert cfg.normalization.ghost_batch_size == cfg.batch_size == 128
        assert cfg.dataset.train_size is None and cfg.precision == "fp32"
        assert (cfg.smith18.hybrid_max_batch, cfg.smith18.max_batch) == (640, 5120)
        assert steps_at(cfg, 0.3, 0.6, 0.8)  # as 60, 120, 160 of 200
    config = tuple(PAPERS["smith18"].profiles["medium"].config)
    # By hand: 10 x floor(50,000 / 128); Figure 5's momentum run: batch 3,200 for 3 epochs
    # (15 updates each), then 5,120 (9 each) for 7.
    assert planned_updates("momentum_decay_lr", config) == 3_900
    assert planned_updates("fig5_increased_momentum", config) == 3 * 15 + 7 * 9


@pytest.mark.skipif("radam" not in MEDIUM, reason="radam declares no medium profile")
def test_radam_medium_is_the_papers_setting_but_for_the_epochs():
    for run, cfg in configs("radam"):
        assert cfg.model.depth == 20 and cfg.batch_size == 128 and cfg.precision == "fp32"
        assert cfg.dataset.train_size is None and steps_at(cfg, 0.5, 0.75)  # 81, 122 of 164
        if run.preset == "adam_2k":  # k freezes about a sixth of the run, as in quick
            updates = cfg.epochs * (50_000 // 128)
            assert abs(6 * cfg.optimizer.k - updates) <= 0.1 * updates


@pytest.mark.skipif("gn" not in MEDIUM, reason="gn declares no medium profile")
def test_gn_medium_keeps_resnet20_and_the_linear_rule_at_batches_2_to_128():
    seeds: dict[tuple[str, int], int] = {}
    for run, cfg in configs("gn"):
        assert cfg.model.depth == 20 and cfg.dataset.train_size is None
        assert cfg.schedule.scale_lr_with_batch and cfg.schedule.reference_batch == 128
        assert steps_at(cfg, 0.3, 0.6, 0.9)  # as 30, 60, 90 of 100
        seeds[run.preset, cfg.batch_size] = seeds.get((run.preset, cfg.batch_size), 0) + 1
    assert {b for _, b in seeds} == {2, 8, 128}
    assert all(seeds[p, b] == 3 for p, _ in seeds for b in (2, 128))  # the compared cells


@pytest.mark.skipif("bn4things" not in MEDIUM, reason="bn4things declares no medium profile")
def test_bn4things_medium_is_cifar10_with_resnet20_and_a_tenth_held_out():
    epochs = set()
    for _, cfg in configs("bn4things"):
        assert cfg.dataset.name == "cifar10" and cfg.dataset["_target_"].endswith(".cifar10")
        assert cfg.dataset.val_fraction == 0.1 and cfg.dataset.train_size is None
        assert cfg.model.depth == 20 and steps_at(cfg, 0.5, 0.75)  # as 50, 75 of 100
        epochs.add(cfg.epochs)
    assert len(epochs) == 1  # B = 2 and B = 128 alike

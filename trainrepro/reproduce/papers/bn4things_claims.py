"""The claims of the bn4things declaration (Summers & Dinneen 2020), each decided on a per-seed
effect: the final test accuracy of a technique's run minus the baseline's (or the other arm's)
run of the same seed, in points. A setting the paper tunes (ghost size, groups) is picked on
the validation split (mean over its seeds) and then compared on test data; example weighting's
alpha is picked on each run's validation split and judged on test data.

The paper's numbers come from a survey of the paper (its tables were not at hand: papers.md
sec. 3); they are quoted beside ours, in the paper's setting, not ours.
"""

from __future__ import annotations

import math

import pandas as pd

from trainrepro.reproduce.paper import NOT_RUN, Claim, Effect, Measurement, Results, Verdict
from trainrepro.reproduce.papers.bn4things_alpha import alpha_summary

UNIT = "points"
# The scales whose runs can show a claim: every profile runs all ten settings at 5 seeds.
# "No difference" between decaying gamma towards 0 and towards 1: under the effects the paper
# reports as real (ghost BN +0.84, example weighting up to +0.6, BGN over GN +0.69), above its
# smallest (WD on gamma/beta +0.3).
NO_DIFF = 0.5
SURVEY = "(survey of the paper)"
PAPER_SAYS = {  # key: (effect in points, where, in words)
    "ew_test": (0.6, f"up to +0.6 top-1, ResNet-152 on ImageNet {SURVEY}"),
    "ghost_bn": (0.84, f"+0.84, CIFAR-100 {SURVEY}"),
    "wd_gamma_beta": (0.3, f"+0.3 over ten runs, CIFAR-100 {SURVEY}"),
    "wd_gamma_target": (0.0, f"no difference {SURVEY}"),
    "bgn_small_batch": (0.69, f"73.91 -> 74.60 (+0.69), CIFAR-100, B = 2, with example "
                        f"weighting {SURVEY}"),
}  # fmt: skip


def seed_of(run_dir: str) -> int:
    return int(run_dir.rsplit("/", 1)[-1].removeprefix("seed"))


def accs(res: Results, preset: str, setting: str | None = None, col: str = "test_acc") -> dict:
    """{seed: final ``col``} of the completed runs of ``preset`` (at ``setting``)."""
    final = res.final()
    if col not in final:
        return {}
    sel = (final["preset"] == preset) & (final["status"] == "completed")
    if setting is not None:
        sel &= final["setting"] == setting
    return {seed_of(r): float(v) for r, v in zip(final.loc[sel, "run_dir"], final.loc[sel, col],
                                                   strict=True)}  # fmt: skip


def picked(res: Results, preset: str) -> str | None:
    """The setting of ``preset`` with the best mean final validation accuracy over its seeds."""
    final = res.final()
    sub = final[(final["preset"] == preset) & (final["status"] == "completed")]
    if sub.empty or "val_acc" not in sub or sub["val_acc"].isna().all():
        return None
    return str(sub.groupby("setting")["val_acc"].mean().sort_values(kind="stable").index[-1])


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def paired(a: dict, b: dict, what: str, key: str) -> Measurement | Verdict:
    """a - b per seed both have; the means and the paper's number in the detail."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return Verdict(NOT_RUN, f"{what}: no seed has runs of both arms; the quick and full "
                       "profiles declare 5 seeds of each")  # fmt: skip
    values = tuple(a[s] - b[s] for s in seeds)
    detail = (
        f"{what}: per seed {', '.join(f'{v:+.2f}' for v in values)} (seeds {seeds}); mean "
        f"test accuracy {_mean(a[s] for s in seeds):.2f}% against {_mean(b[s] for s in seeds):.2f}%"
    )
    if key in PAPER_SAYS:
        detail += f"; paper: {PAPER_SAYS[key][1]}"
    return Measurement(values, detail, {"a": _mean(a[s] for s in seeds),
                                        "b": _mean(b[s] for s in seeds)})  # fmt: skip


def _ew(res: Results, preset: str = "baseline") -> pd.DataFrame:
    ew = alpha_summary(res)
    return ew[ew["preset"] == preset] if len(ew) else ew


def measure_ew(res: Results) -> Measurement | Verdict:
    ew = _ew(res)
    if ew.empty:
        return Verdict(NOT_RUN, "no bn-alpha rows for the baseline runs: the report computes "
                       "them from the runs' checkpoints")  # fmt: skip
    after = {seed_of(r): a for r, a in zip(ew["run_dir"], ew["test_after"], strict=True)}
    before = {seed_of(r): b for r, b in zip(ew["run_dir"], ew["test_before"], strict=True)}
    m = paired(after, before, "test accuracy at the alpha picked on validation minus at "
               "alpha 0 (plain BN)", "ew_test")  # fmt: skip
    if isinstance(m, Verdict):
        return m
    alphas = ", ".join(f"{a:g}" for a in ew.sort_values("run_dir")["alpha"])
    val = ", ".join(f"{v:+.2f}" for v in (ew.sort_values("run_dir")["val_after"]
                                          - ew.sort_values("run_dir")["val_before"]))  # fmt: skip
    detail = (f"{m.detail}; alphas picked {alphas}; on the validation split they were picked "
              f"on (a gain by construction, not evidence): {val}")  # fmt: skip
    return Measurement(m.values, detail, m.numbers)


def measure_ghost(res: Results) -> Measurement | Verdict:
    setting = picked(res, "ghost_bn")
    if setting is None:
        return Verdict(NOT_RUN, "no ghost BN runs with a validation split: the quick and full "
                       "profiles run them")  # fmt: skip
    return paired(accs(res, "ghost_bn", setting), accs(res, "baseline"),
                  f"ghost BN {setting} (picked on validation) minus the baseline", "ghost_bn")


def measure_wd(res: Results) -> Measurement | Verdict:
    return paired(accs(res, "wd_norm", "to0"), accs(res, "baseline"),
                  "WD on gamma/beta (towards 0) minus the baseline", "wd_gamma_beta")


def measure_wd_target(res: Results) -> Measurement | Verdict:
    return paired(accs(res, "wd_norm", "to1"), accs(res, "wd_norm", "to0"),
                  "gamma decayed towards 1 minus towards 0", "wd_gamma_target")


def measure_combined(res: Results) -> Measurement | Verdict:
    ew = _ew(res, "combined")
    after = {seed_of(r): a for r, a in zip(ew["run_dir"], ew["test_after"], strict=True)} \
        if len(ew) else {}  # fmt: skip
    plain = accs(res, "combined")
    comb = {s: after.get(s, a) for s, a in plain.items()}
    n_ew = len(set(after) & set(plain))
    return paired(comb, accs(res, "baseline"), f"combined (ghost 16 + WD on gamma/beta, example "
                  f"weighting on {n_ew} of {len(plain)}) minus the baseline", "combined")


def measure_bgn(res: Results) -> Measurement | Verdict:
    bgn, gn = picked(res, "bgn_small"), picked(res, "gn_small")
    if bgn is None or gn is None:
        return Verdict(NOT_RUN, "needs BGN and GN runs at B = 2 with a validation split: the "
                       "quick and full profiles run them")  # fmt: skip
    return paired(accs(res, "bgn_small", bgn), accs(res, "gn_small", gn),
                  f"BGN {bgn} minus GN {gn} at B = 2 (groups of each picked on validation; no "
                  "example weighting)", "bgn_small_batch")  # fmt: skip


_NOT_AT_HAND = "paper text not at hand; the technique is in the abstract"
CLAIMS = (
    Claim("ew_test", "Inference example weighting, alpha picked on held-out data, improves test "
          "accuracy", f"Sec. 3.1 ({_NOT_AT_HAND}); up to +0.6 top-1 on ImageNet ResNet-152 "
          f"{SURVEY}", Effect("test accuracy at the picked alpha minus at alpha 0, per baseline "
                              "seed", 0.0, ">", UNIT), measure_ew),
    Claim("ghost_bn", "Ghost BN regularizes at medium batch sizes: it raises test accuracy",
          f"Sec. 3.2 ({_NOT_AT_HAND}); +0.84 on CIFAR-100 {SURVEY}",
          Effect("test accuracy of ghost BN (size picked on validation) minus the baseline, "
                 "per seed", 0.0, ">", UNIT), measure_ghost),
    Claim("wd_gamma_beta", "Weight decay on gamma and beta improves accuracy (small gain)",
          f"Sec. 3.3 ({_NOT_AT_HAND}); +0.3 over ten runs on CIFAR-100 {SURVEY}",
          Effect("test accuracy with WD on gamma/beta (towards 0) minus the baseline, per seed",
                 0.0, ">", UNIT), measure_wd),
    Claim("wd_gamma_target", "Decaying gamma towards 1 instead of 0 makes no difference",
          f"Sec. 3.3 ({_NOT_AT_HAND}); no difference {SURVEY}",
          Effect("test accuracy with gamma decayed towards 1 minus towards 0, per seed",
                 NO_DIFF, "within", UNIT), measure_wd_target),
    Claim("combined", "The techniques combine: together they beat the baseline",
          f"Sec. 4 ({_NOT_AT_HAND})",
          Effect("test accuracy of ghost BN 16 + WD on gamma/beta + example weighting minus "
                 "the baseline, per seed", 0.0, ">", UNIT), measure_combined),
    Claim("bgn_small_batch", "At batch 2, Batch-Group Norm beats tuned Group Norm",
          f"Sec. 3.4 ({_NOT_AT_HAND}); 73.91 -> 74.60 on CIFAR-100 with example weighting "
          f"{SURVEY}", Effect("test accuracy of BGN minus GN at B = 2 (groups of each picked on "
                              "validation), per seed", 0.0, ">", UNIT), measure_bgn),
)  # fmt: skip

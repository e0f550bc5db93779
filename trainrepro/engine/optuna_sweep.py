"""hydra-optuna-sweeper's sweeper, made restartable (``hparams_search`` configs use it).

The plugin numbers its jobs from 0 in every invocation and runs ``n_trials`` more trials each
time, so re-running a named sweep would put new trials into the folders of earlier ones. With
:func:`patch_optuna_sweeper` (the CLI calls it before Hydra starts):

- trial N runs in ``<sweep dir>/N`` whatever the invocation (the default ``hydra.sweep.subdir``);
- ``n_trials`` is the study's total: the same command after a kill runs only what is missing,
  and after the last trial it runs nothing and rewrites ``optimization_results.yaml``;
- a trial a killed sweep left running is finished first, in its own folder (the job resumes
  from its checkpoint), and told to the study;
- a seeded sampler is reseeded with ``seed + trials so far``, so a restarted study does not
  draw its first points again;
- a command whose fixed overrides differ from those of the study's trials is refused in one
  line, before anything runs (the trials would not be comparable).

Why a patch and not a subclass: Hydra instantiates sweepers only from the ``hydra_plugins``
namespace package, and this package is not one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MARK = "_trainrepro_restartable"


def patch_optuna_sweeper() -> None:
    """Make the plugin's sweeper restartable; nothing when the plugin is not installed."""
    try:
        from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
    except ImportError:
        return
    if not getattr(OptunaSweeper.sweep, MARK, False):
        setattr(_sweep, MARK, True)
        OptunaSweeper.sweep = _sweep


def _sweep(self: Any, arguments: list[str]) -> None:
    """OptunaSweeper.sweep, restartable: see the module's docstring."""
    import optuna
    from hydra.utils import instantiate
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    impl = self.sweeper
    if isinstance(impl.storage, str) and impl.storage.startswith("sqlite:///"):
        Path(impl.sweep_dir).mkdir(parents=True, exist_ok=True)  # sqlite makes no folders
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the plugin says "new" or "existing"
    try:
        study = optuna.create_study(
            study_name=impl.study_name,
            storage=impl.storage,
            directions=impl._get_directions(),
            load_if_exists=True,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    params_conf = [*impl._parse_sweeper_params_config(), *arguments]
    _, fixed = create_params_from_overrides(params_conf)
    _refuse_another_command(study.trials, fixed, impl.storage)
    for trial in study.trials:
        if trial.state == TrialState.RUNNING:  # left by a killed sweep
            _finish(impl, study, trial, fixed)
    done = len(study.trials)
    if done:
        to_go = max(0, impl.n_trials - done)
        print(f"optuna: study {study.study_name} has {done} trials; {to_go} to go", flush=True)
        seed = OmegaConf.select(impl.config, "hydra.sweeper.sampler.seed")
        if seed is not None:
            sampler = OmegaConf.select(impl.config, "hydra.sweeper.sampler")
            impl.sampler = instantiate(sampler, seed=seed + done)
    impl.job_idx = done  # the next trial's number: its folder
    impl.n_trials = max(0, impl.n_trials - done)
    impl.sweep(arguments)
    study = optuna.load_study(study_name=study.study_name, storage=impl.storage)
    if len(impl._get_directions()) == 1 and any(
        t.state == TrialState.COMPLETE for t in study.trials
    ):
        best = study.best_trial
        print(
            f"optuna: best {best.value:.6g} (trial {best.number}) with {best.params}; "
            f"{Path(impl.sweep_dir) / 'optimization_results.yaml'}",
            flush=True,
        )


def _finish(impl: Any, study: Any, trial: Any, fixed: dict[str, Any]) -> None:
    """Run a trial a killed sweep left running, in its folder, and tell its result."""
    from optuna.trial import TrialState

    overrides = [f"{k}={v}" for k, v in {**trial.params, **fixed}.items()]  # as the plugin's
    [ret] = impl.launcher.launch([overrides], initial_job_idx=trial.number)
    try:
        study.tell(trial.number, float(ret.return_value))
    except Exception:
        study.tell(trial.number, state=TrialState.FAIL)
        raise


def _refuse_another_command(trials: list[Any], fixed: dict[str, Any], storage: Any) -> None:
    """Exit with one line when the study's trials ran with other fixed overrides (the plugin
    keeps them as each trial's user attributes)."""
    if not trials:
        return
    before = trials[0].user_attrs
    for key in sorted(set(before) | set(fixed)):
        if before.get(key) != fixed.get(key):
            was = f"{key}={before[key]}" if key in before else f"no {key}"
            print(
                f"error: {key}={fixed.get(key, '')}: differs from the study in {storage} "
                f"(its trials ran with {was}); name another hydra.sweep.dir for a new study",
                file=sys.stderr,
            )
            sys.exit(2)

"""The trainer: building a run from its config (``build``), the training loop (``train``) and
what surrounds it (``lifecycle``), checkpoints, preemption, records, torchrun, the plan preview,
the checks of a command line's folders before Hydra (``launch``) and the restartable job runner.
``run`` at its bottom holds the ``Run`` type and the callback and update-rule seams. Imports
config, data, norms, schedules, models and optim; never an instrument (those come in through
``_target_``)."""

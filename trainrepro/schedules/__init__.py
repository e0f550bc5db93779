"""Learning-rate, batch-size and momentum schedules as pure functions of training progress.

A schedule maps (fractional epoch, update count) to a ``SchedulePoint``. It holds no state,
so resuming a run needs nothing saved. The trainer reads ``batch_size`` at the start of each
epoch and ``lr``/``momentum`` before every update, with ``epoch = e + i / steps_in_epoch``.
Each builder matches one ``conf/schedule/<name>.yaml``; runtime kwargs ``lr``, ``batch_size``,
``momentum`` and ``epochs`` come from the run, and every builder takes the same linear-warmup
keys, applied by the ``Warmup`` wrapper, and the same batch-scaling keys (``scale_batch_with``,
``reference_lr``, ``reference_momentum``; Smith et al. 2018, Sec. 5), which pick the schedule's
initial batch size by ``scaled_batch_size``, and the linear lr-scaling keys of Goyal et al.
(2017; ``scale_lr_with_batch``, ``reference_batch``), lr x B / reference_batch. ``noise`` holds
the SGD noise scale these rules keep constant. Imports only config and errors.
"""

from trainrepro.schedules.builders import (
    SCHEDULES,
    ScheduleBuilder,
    constant,
    cosine,
    create_schedule,
    cyclic,
    exponential,
    sgdr,
    step,
)
from trainrepro.schedules.curves import (
    CYCLIC_MODES,
    STEP_MODES,
    Schedule,
    SchedulePoint,
    Warmup,
)

__all__ = [
    "CYCLIC_MODES",
    "SCHEDULES",
    "STEP_MODES",
    "Schedule",
    "ScheduleBuilder",
    "SchedulePoint",
    "Warmup",
    "constant",
    "cosine",
    "create_schedule",
    "cyclic",
    "exponential",
    "sgdr",
    "step",
]

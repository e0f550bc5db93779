"""Smith et al. (ICLR 2018), "Don't Decay the Learning Rate, Increase the Batch Size".

The SGD noise scale g = lr / (1 - m) * (N / B - 1), and the rules that keep it fixed while the
initial batch grows with the learning rate (B ~ lr) or the momentum (B ~ 1 / (1 - m)).
"""

from __future__ import annotations

from collections.abc import Sequence

from trainrepro.errors import ConfigError, check_int, check_number

SCALE_RULES = ("lr", "momentum")


def noise_scale(lr: float, momentum: float | None, n_train: int, batch_size: int) -> float:
    """SGD noise scale g = lr / (1 - m) * (N / B - 1) (Smith et al. 2018)."""
    m = 0.0 if momentum is None else momentum
    m = check_number("optimizer.momentum", m, 0.0, 1.0, high_open=True)
    n_train = check_int("n_train", n_train, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > n_train:
        raise ConfigError("batch_size", batch_size, f"exceeds the {n_train} training samples")
    return lr / (1.0 - m) * (n_train / batch_size - 1.0)


def scaled_batch_size(
    batch_size: int,
    lr: float,
    momentum: float | None,
    *,
    rules: Sequence[str],
    reference_lr: float | None,
    reference_momentum: float | None,
) -> int:
    """The initial batch size under Smith et al.'s (ICLR 2018, Sec. 5) scaling rules.

    The noise scale g ~ lr / (B (1 - m)) stays that of the reference run (``batch_size`` at
    ``reference_lr``, ``reference_momentum``) when B grows with each rule in ``rules``:
    "lr": B * lr / reference_lr; "momentum": B * (1 - reference_momentum) / (1 - momentum).
    E.g. 128 at lr 0.1, m 0.9 -> 640 at lr 0.5 -> 3200 at lr 0.5, m 0.98. Rounded to whole
    samples; no rules gives ``batch_size``. Bad settings raise ConfigError(schedule.<key>).
    """
    if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
        raise ConfigError(
            "schedule.scale_batch_with", rules, f"must be a list of: {', '.join(SCALE_RULES)}"
        )
    rules = list(rules)
    unknown = [r for r in rules if r not in SCALE_RULES]
    if unknown or len(set(rules)) != len(rules):
        reason = f"unknown rule {unknown[0]}" if unknown else "lists a rule twice"
        raise ConfigError(
            "schedule.scale_batch_with", rules, f"{reason}; valid: {', '.join(SCALE_RULES)}"
        )
    factor = 1.0
    if "lr" in rules:
        if reference_lr is None:
            raise ConfigError("schedule.reference_lr", None, "required with scale_batch_with lr")
        factor *= lr / check_number("schedule.reference_lr", reference_lr, 0.0, low_open=True)
    elif reference_lr is not None:
        raise ConfigError(
            "schedule.reference_lr", reference_lr, "used only with scale_batch_with lr"
        )
    ref_m_key = "schedule.reference_momentum"
    if "momentum" in rules:
        if reference_momentum is None:
            raise ConfigError(ref_m_key, None, "required with scale_batch_with momentum")
        ref_m = check_number(ref_m_key, reference_momentum, 0.0, 1.0, high_open=True)
        if momentum is None:
            raise ConfigError(
                "schedule.scale_batch_with", rules, "momentum rule, but the optimizer has none"
            )
        factor *= (1.0 - ref_m) / (1.0 - momentum)
    elif reference_momentum is not None:
        raise ConfigError(ref_m_key, reference_momentum, "used only with scale_batch_with momentum")
    scaled = round(batch_size * factor)
    if scaled < 1:
        raise ConfigError(
            "schedule.scale_batch_with", rules, f"scales batch_size={batch_size} to {scaled}"
        )
    return scaled

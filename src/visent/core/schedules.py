"""Entropy-coefficient schedules (METHOD §4) as pure functions of ``(step, total_steps)``.

Sign convention: the trainer computes ``loss = L_policy + coef · L_ent`` with
``L_ent = -mean entropy`` (:func:`visent.core.policy_loss.entropy_regularizer`), so a **positive
coefficient raises entropy** (exploration) and a negative one lowers it (exploitation).

``step`` is the 0-based optimizer step being taken (HF ``state.global_step`` at loss time) and runs
``0 .. total_steps - 1``. The switch happens at step ``ceil(switch · total_steps)`` (:func:`switch_step`):
``two_stage`` uses ``+coef_max`` for ``step < switch_step`` and ``-coef_min`` from it on. Because the
schedule depends only on the step, a resumed run continues exactly.

Kinds (:data:`SCHEDULES`):

* ``none`` — 0 (plain GRPO).
* ``max`` — ``+coef_max`` throughout (entropy maximisation baseline).
* ``min`` — ``-coef_min`` throughout (entropy minimisation baseline).
* ``two_stage`` — ``+coef_max`` then ``-coef_min`` (the paper's method).
* ``min_then_max`` — ``-coef_min`` then ``+coef_max`` (the reverse-order ablation).
* ``linear`` / ``cosine`` — anneal from ``+coef_max`` at step 0 to ``-coef_min`` at step ``total_steps - 1``
  (``switch`` unused); a smooth counterpart of ``two_stage``.

Defaults. The paper publishes no λ values. ``DEFAULT_COEF_MAX = DEFAULT_COEF_MIN = 1e-3``: 1e-3 is the entropy
bonus the VEPO authors' code runs on Qwen2.5-VL (METHOD §3), so it is a magnitude known not to blow up
entropy at lr 1e-6, and it is small next to the policy term (|A| ~ 1 per token) so the regulariser steers
rather than dominates whenever groups have reward variance; it only takes over when advantages vanish, which
is exactly the all-equal-reward regime the two-stage method targets. We use the same magnitude for both
stages so that the two phases are symmetric and the ablations (max-only, min-only, reverse order) differ only
in sign pattern. Expose and sweep them for real runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "DEFAULT_COEF_MAX",
    "DEFAULT_COEF_MIN",
    "DEFAULT_SWITCH",
    "SCHEDULES",
    "entropy_coef",
    "entropy_stage",
    "switch_step",
]

DEFAULT_COEF_MAX = 1e-3
DEFAULT_COEF_MIN = 1e-3
DEFAULT_SWITCH = 0.8


def switch_step(total_steps: int, switch: float = DEFAULT_SWITCH) -> int:
    """First step of the second stage: ``ceil(switch · total_steps)``.

    Rounded to 9 decimals before the ceiling so float noise (``0.7 * 10 = 7.000000000000001``) does not
    move the switch by a step.
    """
    return math.ceil(round(switch * total_steps, 9))


def _progress(step: int, total_steps: int) -> float:
    """Fraction of training done, 0 at step 0 and 1 at the last step (clamped past it)."""
    return min(step / max(total_steps - 1, 1), 1.0)


def _none(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    return 0.0


def _max(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    return coef_max


def _min(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    return -coef_min


def _two_stage(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    return coef_max if step < switch_step(total_steps, switch) else -coef_min


def _min_then_max(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    return -coef_min if step < switch_step(total_steps, switch) else coef_max


def _linear(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    p = _progress(step, total_steps)
    return coef_max + (-coef_min - coef_max) * p


def _cosine(step: int, total_steps: int, coef_max: float, coef_min: float, switch: float) -> float:
    p = _progress(step, total_steps)
    return -coef_min + (coef_max + coef_min) * 0.5 * (1.0 + math.cos(math.pi * p))


ScheduleFn = Callable[[int, int, float, float, float], float]

SCHEDULES: dict[str, ScheduleFn] = {
    "none": _none,
    "max": _max,
    "min": _min,
    "two_stage": _two_stage,
    "min_then_max": _min_then_max,
    "linear": _linear,
    "cosine": _cosine,
}

# kinds whose coefficient jumps at switch_step; entropy_stage reports which side of it a step is on
_SWITCHING = ("two_stage", "min_then_max")


def _validate(step: int, total_steps: int, kind: str, switch: float, coef_max=0.0, coef_min=0.0) -> None:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown entropy schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if not 0.0 < switch < 1.0:
        raise ValueError(f"switch must be a fraction of training in (0, 1), got {switch!r}")
    for name, value in (("coef_max", coef_max), ("coef_min", coef_min)):
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(
                f"{name} must be a finite value >= 0 (it is a magnitude; the schedule applies the sign), "
                f"got {value!r}"
            )


def entropy_coef(
    step: int,
    total_steps: int,
    kind: str = "two_stage",
    coef_max: float = DEFAULT_COEF_MAX,
    coef_min: float = DEFAULT_COEF_MIN,
    switch: float = DEFAULT_SWITCH,
) -> float:
    """Entropy coefficient ``λ(step)`` for the loss ``L_policy + λ · L_ent``; positive raises entropy.

    Args:
        step: 0-based optimizer step; steps past ``total_steps`` keep the final value.
        total_steps: planned number of optimizer steps (>= 1).
        kind: a key of :data:`SCHEDULES`.
        coef_max: λ_max >= 0, magnitude of the entropy-raising phase.
        coef_min: λ_min >= 0, magnitude of the entropy-lowering phase (applied as ``-coef_min``).
        switch: fraction of training at which switching kinds change phase, in (0, 1).
    """
    _validate(step, total_steps, kind, switch, coef_max, coef_min)
    return float(SCHEDULES[kind](step, total_steps, coef_max, coef_min, switch))


def entropy_stage(
    step: int, total_steps: int, kind: str = "two_stage", switch: float = DEFAULT_SWITCH
) -> int:
    """0 before ``switch_step`` and 1 from it on, for the switching kinds (``two_stage``, ``min_then_max``).

    The other kinds have a single stage and always return 0 (for ``linear``/``cosine`` the coefficient's
    sign, not a stage, tells the phase).
    """
    _validate(step, total_steps, kind, switch)
    if kind not in _SWITCHING:
        return 0
    return int(step >= switch_step(total_steps, switch))

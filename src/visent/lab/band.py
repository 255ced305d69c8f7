"""The band controller of the warm-start: train until *measured* held-out accuracy lies in a band.

Model-free (``band_search`` takes the training step, the measurement and the snapshot/restore of the
training state as callables), so the screen → check → roll-back → replay logic is tested on a fake
with a known accuracy curve; ``visent.lab.sft`` plugs in the real model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from visent.lab.warmstart_config import WarmStartConfig

__all__ = ["band_search"]


def band_search(
    cfg: WarmStartConfig,
    train_step: Callable[[int, float], dict[str, Any]],
    measure: Callable[[str], tuple[float, int]],
    snapshot: Callable[[], Any],
    restore: Callable[[Any], None],
    *,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train until measured accuracy lies in ``cfg.band``: the screen → check → replay loop.

    The model-free core of the band rule (see the module docstring), so that it can be tested on a fake:

    - ``train_step(step, lr_scale)`` trains optimizer step ``step`` (0-based; its data must depend on
      ``step`` only, so a replay after a roll-back sees the same batches) with the learning rate scaled by
      ``lr_scale``, and returns that step's record (``{"loss": ...}``);
    - ``measure("screen" | "check")`` returns ``(accuracy in [0, 1], examples scored)``, or with
      ``cfg.min_class_accuracy`` set ``(accuracy, examples, worst class's accuracy)`` (a class = one
      answer, e.g. one true count): a check in the band with a class below that floor counts as below
      the aim, so training goes on (and an overshoot rolls back and replays, as above);
    - ``snapshot()`` returns the training state (model, optimizer, RNG); ``restore(state)`` puts it back.

    Returns ``{"reached", "accuracy", "step", "steps_trained", "rollbacks", "lr_scale", "checks",
    "history", "reason"}``: ``step`` counts the optimizer steps behind the final model, ``steps_trained``
    every step trained including replays; ``checks`` is every measurement ``{"step", "kind", "accuracy",
    "n", "lr_scale", "outcome"}`` with outcome ``below`` / ``in band`` / ``overshoot`` / ``screen``.
    """
    if cfg.band is None:
        raise ValueError("band_search: cfg.band is None")
    lo, hi = cfg.band
    aim = cfg.band_aim()
    floor = cfg.min_class_accuracy
    step, trained, rollbacks, lr_scale = 0, 0, 0, 1.0
    mode = "screen"
    period = {"screen": cfg.screen_every, "check": cfg.check_every, "fine": 1}
    # The untrained model is below any band with low > 0 (it has not learnt the template yet).
    saved = (0, snapshot())
    checks: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    last_check: tuple[int, float] | None = None
    reason = "max_steps"

    def record(kind: str, acc: float, n: int, outcome: str, worst: float | None = None) -> None:
        checks.append(
            {"step": step, "kind": kind, "accuracy": acc, "n": n, "lr_scale": lr_scale, "outcome": outcome}
            | ({} if worst is None else {"worst_class": worst})
        )

    while step < cfg.max_steps:
        row = {"step": step + 1, "lr_scale": lr_scale, **train_step(step, lr_scale)}
        step += 1
        trained += 1
        history.append(row)
        if on_step is not None:
            on_step(row)
        final = step == cfg.max_steps
        if step % period[mode] and not final:
            continue
        if mode == "screen" and not final:
            acc, n, *_ = measure("screen")
            if acc < lo - cfg.screen_margin:
                record("screen", acc, n, "screen")
                saved = (step, snapshot())
                continue
            record("screen", acc, n, "screen passed")
            mode = "check"
        acc, n, *rest = measure("check")
        worst = rest[0] if rest else None
        last_check = (step, acc)
        covered = floor is None or (worst is not None and worst >= floor)
        if covered and (aim <= acc <= hi or (final and lo <= acc <= hi)):
            record("check", acc, n, "in band", worst)
            return _band_outcome(True, acc, step, trained, rollbacks, lr_scale, checks, history, "in band")
        if acc < aim or (acc <= hi and not covered):
            # Below the band, in its lower half, or in it with an answer the model (almost) never gives:
            # keep training towards the aim.
            record("check", acc, n, "below" if acc < aim else "class below floor", worst)
            saved = (step, snapshot())
            if mode == "check" and acc < lo - cfg.screen_margin:
                # The screen passed by chance (at chance level a 32-example screen scatters by ±7 points).
                mode = "screen"
            continue
        record("check", acc, n, "overshoot", worst)
        if rollbacks >= cfg.max_rollbacks:
            reason = "max_rollbacks"
            break
        rollbacks += 1
        if mode == "fine":
            # One step went from below the band to above it: only a smaller step can land inside.
            lr_scale *= 0.5
        mode = "fine"
        step, state = saved
        restore(state)
    acc = last_check[1] if last_check is not None and last_check[0] == step else float("nan")
    return _band_outcome(False, acc, step, trained, rollbacks, lr_scale, checks, history, reason)


def _band_outcome(
    reached: bool, acc: float, step: int, trained: int, rollbacks: int, lr_scale: float,
    checks: list[dict[str, Any]], history: list[dict[str, Any]], reason: str,
) -> dict[str, Any]:
    return {
        "reached": reached,
        "accuracy": acc,
        "step": step,
        "steps_trained": trained,
        "rollbacks": rollbacks,
        "lr_scale": lr_scale,
        "checks": checks,
        "history": history,
        "reason": reason,
    }

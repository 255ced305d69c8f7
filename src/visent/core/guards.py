"""Counters of numerical guard events: how often the core had to repair its input.

A long RL run must not die (or silently go wrong) because one token of one response at step 3,000 had a
NaN logit, an empty completion, or a log-ratio that overflows ``exp``. The core functions repair such
inputs locally — the repair is documented at each site — and *count* every repair here, so that a run
that keeps hitting a guard is visible in the metrics instead of being quietly patched.

Counting never synchronises with the accelerator: a count is a 0-d tensor added on the tensor's own
device (``count(name, bool_tensor)`` sums it there); the host sees the totals only in :meth:`pop`, which
the trainer calls once per logging step. A count of a plain ``int`` is accepted too.

Event names (each a number of occurrences since the last ``pop``):

==============================  ===================================================================
``guard/nonfinite_logits``      valid tokens whose counterfactual statistics came out non-finite
                                (NaN or +inf logits, or a fully −inf vocabulary, in either pass);
                                all four statistics of such a token are set to 0 (``core.stats``)
``guard/nonfinite_stats``       valid tokens with a non-finite statistic handed to ``token_scores``;
                                the statistic is read as 0 (``core.scores``)
``guard/nonfinite_scores``      valid tokens with a non-finite score in ``select_tokens``; they rank
                                last (``core.selection``)
``guard/nonfinite_rewards``     non-finite rewards in ``group_advantages``; their whole group gets
                                advantage 0 (``core.advantages``)
``guard/empty_response``        responses with no valid token in a ``policy_loss`` call
``guard/all_padding_batch``     ``policy_loss`` calls whose batch has no valid token at all (loss 0)
``guard/log_ratio_clamped``     policy tokens whose ``log π − log π_old`` left ``[-20, 20]`` and was
                                clamped, so ``exp`` cannot overflow (``core.policy_loss``)
``guard/nonfinite_loss_terms``  valid tokens whose log-prob, old/reference log-prob, advantage or
                                importance weight was non-finite; they are left out of the loss
``guard/nonfinite_entropy``     valid tokens whose entropy was non-finite; left out of the entropy
                                regulariser (``core.policy_loss.entropy_regularizer``)
==============================  ===================================================================

A guard keeps NaN and inf out of the loss *value*. It cannot always keep them out of the gradient: if the
model itself produced a NaN log-prob, back-propagation through the model's own ops re-creates it. The
trainer should therefore treat ``guard/nonfinite_loss_terms > 0`` as a bad step worth a warning.

Usage::

    from visent.core import guards
    ...  # core calls count into guards.GUARDS
    metrics.update(guards.pop())  # {"guard/nonfinite_logits": 0, ...} every known name, ints
"""

from __future__ import annotations

import torch

__all__ = ["GUARDS", "GUARD_NAMES", "GuardCounter", "count", "pop"]

GUARD_NAMES: tuple[str, ...] = (
    "guard/nonfinite_logits",
    "guard/nonfinite_stats",
    "guard/nonfinite_scores",
    "guard/nonfinite_rewards",
    "guard/empty_response",
    "guard/all_padding_batch",
    "guard/log_ratio_clamped",
    "guard/nonfinite_loss_terms",
    "guard/nonfinite_entropy",
)


class GuardCounter:
    """Running totals of guard events, kept as tensors until :meth:`pop`.

    Not thread-safe (the core runs in the training thread); each distributed rank has its own counts,
    which the caller may reduce.
    """

    def __init__(self) -> None:
        self._totals: dict[str, torch.Tensor | int] = {}

    def count(self, name: str, n: torch.Tensor | int = 1) -> None:
        """Add ``n`` occurrences of ``name``; a tensor ``n`` (bool or numeric) is summed on its device."""
        if isinstance(n, torch.Tensor):
            n = n.detach().sum().to(torch.int64)
        previous = self._totals.get(name)
        self._totals[name] = n if previous is None else previous + n

    def peek(self) -> dict[str, int]:
        """The totals so far (one host sync per counted name), without clearing them."""
        totals = dict.fromkeys(GUARD_NAMES, 0)
        for name, value in self._totals.items():
            totals[name] = int(value)
        return totals

    def pop(self) -> dict[str, int]:
        """Every known name (0 when not counted) plus any other counted name, then reset to zero."""
        totals = self.peek()
        self._totals.clear()
        return totals

    def reset(self) -> None:
        self._totals.clear()


#: The default counter the core functions count into.
GUARDS = GuardCounter()


def count(name: str, n: torch.Tensor | int = 1) -> None:
    """``GUARDS.count(name, n)``."""
    GUARDS.count(name, n)


def pop() -> dict[str, int]:
    """``GUARDS.pop()``: the totals since the last pop, as ints, for logging."""
    return GUARDS.pop()

"""Spurious-reward baselines from the two-stage entropy paper: rewards that ignore correctness.

- ``random``: Bernoulli(p) from a hash of ``(seed, training step, row id, label, completion text)``, so
  a run is reproducible, an identical completion for the same row at the same step gets the same
  reward, and different steps draw afresh. The step comes from TRL's ``trainer_state`` when present.
- ``format_only``: 1.0 for a well-formed response in either convention (``<think>…</think>`` then
  ``<answer>…</answer>``, or then ``\\boxed{…}``), whatever the answer.

Range [0, 1] for both; neither ever reports a parse failure.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from visent.rewards.base import RewardResult
from visent.rewards.format import is_think_answer, is_think_boxed


def uniform_hash(*parts: Any) -> float:
    """A deterministic uniform number in [0, 1) from the parts' text (blake2b, 64 bits)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8", "replace"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def score_random_with(seed: int, p: float, text: str, answer: Any = None, **row: Any) -> RewardResult:
    """1.0 with probability ``p``, seeded; independent of correctness."""
    step = getattr(row.get("trainer_state"), "global_step", 0)
    u = uniform_hash(seed, step, row.get("id", ""), answer, text)
    value = float(u < p)
    return RewardResult(value, None, {"random": value})


def make_score_random(seed: int = 0, p: float = 0.5) -> Callable[..., RewardResult]:
    """A seeded Bernoulli(``p``) scorer; a picklable ``functools.partial``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random reward probability must be in [0, 1], got {p}")
    return functools.partial(score_random_with, seed, p)


def score_format_only(text: str, answer: Any = None, **row: Any) -> RewardResult:
    """1.0 for ``<think>…</think>`` followed by an ``<answer>`` block or a ``\\boxed{}``."""
    ok = float(is_think_answer(text) or is_think_boxed(text))
    return RewardResult(ok, None, {"format": ok})

"""Format rewards: is the whole response shaped as reasoning then answer?

- ``format``: ``<think>...</think>`` then ``<answer>...</answer>`` and nothing else (whitespace aside);
  exactly one of each tag, thinking may span lines (R1-V / Visual-RFT convention).
- ``boxed_format``: ``<think>...</think>`` then text containing a balanced ``\\boxed{...}``
  (EasyR1 / VEPO convention: the answer is boxed after the thinking).

Range [0, 1] (1 = well formed). A format miss is a score of 0, not a parse failure.
"""

from __future__ import annotations

import re
from typing import Any

from visent.rewards.base import RewardResult
from visent.rewards.extract import boxed_spans

_THINK_ANSWER = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_THINK_REST = re.compile(r"\s*<think>(.*?)</think>(.*)", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _tag_counts(text: str) -> dict[str, int]:
    return {tag: text.count(tag) for tag in _TAGS}


def is_think_answer(text: str) -> bool:
    """Whole-response match of ``<think>…</think><answer>…</answer>`` with one of each tag."""
    if any(n != 1 for n in _tag_counts(text).values()):
        return False
    return _THINK_ANSWER.fullmatch(text) is not None


def is_think_boxed(text: str) -> bool:
    """``<think>…</think>`` at the start (one pair) followed by a balanced ``\\boxed{…}``."""
    counts = _tag_counts(text)
    if counts["<think>"] != 1 or counts["</think>"] != 1:
        return False
    match = _THINK_REST.fullmatch(text)
    return match is not None and bool(boxed_spans(match.group(2)))


def score_format(text: str, answer: Any = None, **row: Any) -> RewardResult:
    """1.0 when ``text`` is ``<think>…</think><answer>…</answer>``; the label is ignored."""
    ok = float(is_think_answer(text))
    return RewardResult(ok, None, {"format": ok})


def score_boxed_format(text: str, answer: Any = None, **row: Any) -> RewardResult:
    """1.0 when ``text`` is ``<think>…</think>`` followed by a ``\\boxed{…}``; the label is ignored."""
    ok = float(is_think_boxed(text))
    return RewardResult(ok, None, {"format": ok})

"""Fine-grained classification: normalised match, or containment, of the class name.

Normalisation: lower case; underscores, hyphens and punctuation become spaces; runs of spaces collapse
(``"Great_Pyrenees"`` == ``"great pyrenees."``). The answer is read from ``<answer>…</answer>`` when
present, else from the whole text.

- exact: the normalised answer equals the normalised class name -> 1.0;
- containment: the class name occurs as whole words inside the answer (``"it is a great pyrenees"``)
  -> 1.0, *unless* the row lists its candidate classes (``choices`` / ``classes`` column) and the
  answer also names another of them — listing every class must not be rewarded.

Range [0, 1]. ``parse_failed`` when the answer is empty.
"""

from __future__ import annotations

import re
from typing import Any

from visent.rewards.base import LabelError, RewardResult, row_value
from visent.rewards.extract import answer_region
from visent.rewards.math import parse_choices

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
MAX_ANSWER_CHARS = 2000  # a class name is short; a longer "answer" is searched only in its tail


def normalize_label(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def score_classification(text: str, answer: Any, **row: Any) -> RewardResult:
    """Whether the answer names the class ``answer``."""
    gold = normalize_label(str(answer)) if answer is not None else ""
    if not gold:
        raise LabelError(f"'answer' {answer!r} is not a class name")
    pred = normalize_label(answer_region(text)[-MAX_ANSWER_CHARS:])
    if not pred:
        return RewardResult(0.0, None, {"exact": 0.0, "contains": 0.0}, parse_failed=True)
    if pred == gold:
        return RewardResult(1.0, pred, {"exact": 1.0, "contains": 1.0})
    contains = _contains(pred, gold)
    if contains:
        classes = parse_choices(row_value(row, "classes")) or parse_choices(row_value(row, "choices")) or []
        others = {normalize_label(c) for c in classes} - {gold}
        # Other classes that are substrings of the true one ("pyrenees" in "great pyrenees") don't count.
        if any(_contains(pred, o) and not _contains(gold, o) for o in others if o):
            contains = False
    score = float(contains)
    return RewardResult(score, pred, {"exact": 0.0, "contains": score})

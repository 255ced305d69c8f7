"""The math reward the VEPO / EasyR1 / VPPO / PAPO code trains with, exactly: ``vepo_authors_math``.

    score = 0.9 · grade(last \\boxed{…} of the response, label) + 0.1 · format

(``Leonnnnnn929/VEPO`` @ 42473082dd59815ea636e7bb627f63f2772ca891, ``verl/utils/reward_score/math.py``):
``grade`` is ``mathruler.grader.grade_answer`` re-implemented in :mod:`visent.rewards.prm800k_grader`; format is
``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", response, re.DOTALL)``, evaluated here by three
``str.find`` calls (same answer, linear time: the regex backtracks badly on long adversarial text).

How it differs from visent's default ``vepo_math`` (docs/training.md, "The authors' reward"): ``vepo_math``
also reads ``<answer>`` tags, multiple-choice options, MathVista's ``precision`` and ``math_verify``'s
equivalences, so it accepts ``\\boxed{\\frac{12}{2}}`` for 6 (the authors' grader requires an integer to be
written as one), a label's trailing ``.`` and units such as ``25°.`` or ``40m.``; its format term needs a
*balanced* box and exactly one ``<think>`` pair, where the authors' regex accepts any ``\\boxed{`` followed by
a ``}`` somewhere after ``</think>``.
"""

from __future__ import annotations

from typing import Any

from visent.rewards.base import LabelError, RewardResult
from visent.rewards.prm800k_grader import extract_last_boxed, grade


def authors_format_ok(text: str) -> bool:
    """``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", text, re.DOTALL)`` without backtracking.

    Starts with ``<think>``; a ``</think>`` after it; a ``\\boxed{`` after that; a ``}`` after that. Taking the
    earliest occurrence of each is enough: any later choice only leaves less room for the next.
    """
    if not text.startswith("<think>"):
        return False
    close = text.find("</think>", len("<think>"))
    if close < 0:
        return False
    box = text.find("\\boxed{", close + len("</think>"))
    return box >= 0 and text.find("}", box + len("\\boxed{")) >= 0


def score_authors_accuracy(text: str, answer: Any, **row: Any) -> RewardResult:
    """1.0 when the last ``\\boxed{}`` grades equal to ``answer`` under the authors' grader, else 0.0."""
    if answer is None or not str(answer).strip():
        raise LabelError("empty 'answer'")
    pred = extract_last_boxed(text)
    found = pred != "None" or "\\boxed{None}" in text
    correct = float(grade(pred, str(answer)))
    return RewardResult(correct, pred if found else None, {"accuracy": correct}, parse_failed=not found and not correct)


def score_authors_format(text: str, answer: Any = None, **row: Any) -> RewardResult:
    """1.0 when the response matches the authors' ``<think>…</think>…\\boxed{…}`` regex; the label is ignored."""
    ok = float(authors_format_ok(text))
    return RewardResult(ok, None, {"format": ok})

"""Math and multiple-choice accuracy: final answer -> string match -> choice match -> symbolic equivalence.

The final answer is the last ``\\boxed{...}`` or ``<answer>...</answer>`` (see ``extract.final_answer``).
Order of checks (first hit wins, score 1.0; otherwise 0.0):

1. multiple choice, when the row has ``choices`` (a list or its JSON text) or the label is a single
   capital letter: the prediction's option letter or option text is mapped to an option index and
   compared with the label's (letter or option text);
2. normalised string match (case, spaces, ``$``, ``\\text{}``, ``\\left``/``\\right``, degree signs, a
   leading ``x =``, trailing period); then, when the row gives a ``precision`` (MathVista float answers),
   the prediction rounded to that many decimals;
3. symbolic equivalence through ``math_verify`` (fractions, decimals, percentages, units, LaTeX forms),
   time-bounded (see ``symbolic``).

Range [0, 1]. ``parse_failed`` when the text has neither a box nor an answer tag.
"""

from __future__ import annotations

import json
import re
from typing import Any

from visent.rewards.base import LabelError, RewardResult, row_value
from visent.rewards.extract import final_answer
from visent.rewards.symbolic import symbolic_equal

_TEXT_CMD = re.compile(r"\\(?:text|mathrm|textbf|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DROP = re.compile(r"\\left|\\right|\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_LEADING_VAR = re.compile(r"^[a-z]\s*=\s*(?=\S)")
_OPTION_PREFIX = re.compile(
    r"^(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*", re.IGNORECASE
)
_LETTER = re.compile(r"^[\(\[]?\s*([A-Za-z])\s*[\)\]]?(?:\s*[.:：)]\s*.*|\s*)$", re.DOTALL)


def normalize(answer: str) -> str:
    """Canonical string form for exact comparison (``"$\\text{ 145}^\\circ$."`` -> ``"145"``)."""
    s = answer.strip()
    for _ in range(3):  # nested \text{\mathrm{...}}
        s = _TEXT_CMD.sub(r"\1", s)
    s = _DROP.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = s.strip().rstrip(".").strip().lower()
    s = _LEADING_VAR.sub("", s)
    return re.sub(r"\s+", "", s)


def parse_choices(value: Any) -> list[str] | None:
    """``choices`` column as a list of option strings: a list, a JSON list, or a ``{"A": ...}`` mapping."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value)]
    if not isinstance(value, (list, tuple)) or not value:
        return None
    return [str(v) for v in value]


def option_letter(answer: str) -> str | None:
    """``"(C)"``, ``"C."``, ``"C: 145°"``, ``"\\text{C}"``, ``"Answer: C"`` -> ``"C"``; else None."""
    s = _TEXT_CMD.sub(r"\1", answer.strip()).replace("$", "").strip()
    s = _OPTION_PREFIX.sub("", s)
    match = _LETTER.match(s)
    return match.group(1).upper() if match else None


def _choice_index(answer: str, choices: list[str], allow_letter: bool) -> int | None:
    if allow_letter:
        letter = option_letter(answer)
        if letter is not None and ord(letter) - 65 < len(choices):
            return ord(letter) - 65
    target = normalize(answer)
    matches = [i for i, c in enumerate(choices) if normalize(c) == target]
    return matches[0] if len(matches) == 1 else None


_METHODS = ("by_choice", "by_string", "by_rounding", "by_symbolic")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")


def _rounded_equal(gold: str, pred: str, precision: Any) -> bool:
    """MathVista's rule for float answers: the prediction rounded to ``precision`` decimals equals the label."""
    try:
        digits = int(precision)
    except (TypeError, ValueError):
        return False
    if not 0 <= digits <= 12:
        return False
    g, p = normalize(gold).replace(",", ""), normalize(pred).replace(",", "")
    if not (_PLAIN_NUMBER.match(g) and _PLAIN_NUMBER.match(p)) or len(p) > 40:
        return False
    return round(float(p), digits) == round(float(g), digits)


def _is_letter_label(gold: str) -> bool:
    return len(gold) == 1 and "A" <= gold <= "Z"


def score_math(text: str, answer: Any, **row: Any) -> RewardResult:
    """Accuracy of the final answer in ``text`` against ``answer``; optional ``choices`` column."""
    if answer is None or not str(answer).strip():
        raise LabelError("empty 'answer'")
    gold = str(answer).strip()
    pred = final_answer(text)
    if pred is None or not pred:
        return RewardResult(0.0, None, {"accuracy": 0.0, **dict.fromkeys(_METHODS, 0.0)}, parse_failed=True)

    def hit(method: str) -> RewardResult:
        # Stable keys on every row (so components can be averaged): which check decided a hit.
        return RewardResult(1.0, pred, {"accuracy": 1.0, **{m: float(m == method) for m in _METHODS}})

    miss = RewardResult(0.0, pred, {"accuracy": 0.0, **dict.fromkeys(_METHODS, 0.0)})

    choices = parse_choices(row_value(row, "choices"))
    gold_forms = [gold]
    if choices:
        gold_index = _choice_index(gold, choices, allow_letter=_is_letter_label(gold))
        pred_index = _choice_index(pred, choices, allow_letter=True)
        if gold_index is not None and pred_index is not None:
            return hit("by_choice") if gold_index == pred_index else miss
        if gold_index is not None:
            gold_forms.append(choices[gold_index])
    elif _is_letter_label(gold):
        letter = option_letter(pred)
        if letter is not None:
            return hit("by_choice") if letter == gold else miss

    pred_norm = normalize(pred)
    if any(normalize(g) == pred_norm and pred_norm for g in gold_forms):
        return hit("by_string")
    precision = row_value(row, "precision")
    if precision is not None and any(_rounded_equal(g, pred, precision) for g in gold_forms):
        return hit("by_rounding")
    if any(symbolic_equal(g, pred) for g in gold_forms):
        return hit("by_symbolic")
    return miss


_INT = re.compile(r"^[+-]?\d{1,18}(?:\.0*)?$")
_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}


def parse_count(answer: str) -> int | None:
    """``"7"``, ``" 7. "``, ``"7.0"``, ``"seven"``, ``"\\text{7}"`` -> 7; anything else None."""
    s = normalize(answer).replace(",", "")
    if _INT.match(s):
        return int(float(s)) if "." in s else int(s)
    return _WORDS.get(s)


def score_counting(text: str, answer: Any, **row: Any) -> RewardResult:
    """Exact integer match of the final answer (``<answer>7</answer>`` or ``\\boxed{7}``) with ``answer``.

    Stricter than ``math``: no symbolic equivalence, so ``\\boxed{14/2}`` is wrong for a count of 7.
    """
    gold = parse_count(str(answer)) if answer is not None else None
    if gold is None:
        raise LabelError(f"'answer' {answer!r} is not an integer count")
    pred_text = final_answer(text)
    pred = parse_count(pred_text) if pred_text else None
    if pred is None:
        return RewardResult(0.0, pred_text, {"accuracy": 0.0}, parse_failed=True)
    correct = float(pred == gold)
    return RewardResult(correct, pred, {"accuracy": correct})

"""Pulling the final answer out of a model's text: ``\\boxed{...}`` (nested braces) and ``<answer>...</answer>``.

All functions are linear-time scans over untrusted text and return None when nothing is found.
"""

from __future__ import annotations

import re

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces: ``(start, end, content)``.

    An unclosed box (truncated generation) is skipped. Nested boxes inside a box are not reported
    separately: the scan resumes after the outer box.
    """
    spans: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        match = _BOXED_RE.search(text, pos)
        if match is None:
            return spans
        depth, i = 1, match.end()
        while i < len(text) and depth:
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2  # an escaped brace \{ or \} is content, not structure
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            i += 1
        if depth:  # unclosed: nothing after it can close it either
            return spans
        spans.append((match.start(), i, text[match.end() : i - 1]))
        pos = i


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}``, or None."""
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def answer_tag_span(text: str) -> tuple[int, int, str] | None:
    """The last ``<answer>...</answer>``: ``(start, end, content)``, or None."""
    last = None
    for match in _ANSWER_RE.finditer(text):
        last = match
    if last is None:
        return None
    return last.start(), last.end(), last.group(1)


def final_answer(text: str) -> str | None:
    """The model's final answer: whichever of the last ``\\boxed{}`` and last ``<answer>`` ends later.

    A box inside the answer tag wins over the tag's full content (``<answer>\\boxed{3}</answer>`` -> ``3``).
    Returns the stripped content, or None when neither is present.
    """
    tag = answer_tag_span(text)
    boxes = boxed_spans(text)
    box = boxes[-1] if boxes else None
    if tag is not None:
        inner = [b for b in boxes if tag[0] <= b[0] and b[1] <= tag[1]]
        if inner:
            return inner[-1][2].strip()
        if box is None or box[1] <= tag[1]:
            return tag[2].strip()
    return box[2].strip() if box is not None else None


def answer_region(text: str) -> str:
    """The ``<answer>`` content if present, else the whole text (for structured answers: boxes, classes)."""
    tag = answer_tag_span(text)
    return tag[2] if tag is not None else text

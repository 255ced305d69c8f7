"""The answer checker the EasyR1 family trains with, re-implemented: ``mathruler.grader`` (PRM800K's grader).

VEPO's, EasyR1's, VPPO's and PAPO's math reward call ``mathruler.grader.grade_answer(
extract_boxed_content(response), label)`` (``Leonnnnnn929/VEPO`` @ 42473082, ``verl/utils/reward_score/math.py``;
``mathruler`` 0.1.0, Apache-2.0, itself OpenAI's PRM800K grader, MIT). This module re-implements that
behaviour so a reproduction trains on exactly the same signal; ``tests/unit/rewards/test_authors_math.py``
checks it against ``mathruler`` itself on response variants built from the shared data.

The rules, in order (``grade``):

1. the two answers normalised the Hendrycks-MATH way (:func:`hendrycks_form`) are equal → correct;
2. normalised the PRM800K way (:func:`prm800k_form`) equal → correct; an empty prediction → wrong;
3. both split into tuple elements (``(1,2)``, ``[a,b]``); a multi-element label needs the same brackets and
   count; element by element: two fractions ``a/b`` must be written identically (unreduced fractions are
   wrong), an integer label needs an integer prediction and vice versa, otherwise sympy must simplify
   ``(label) − (prediction)`` to 0 (skipped for more than two distinct letters, ``^{``, ``^(``, or long
   exponents).

Departures, all on input the authors' code would hang or crash on: sympy runs under a deadline
(``visent.rewards.symbolic.run_with_deadline``, 2 s by default) and a timed-out comparison is "not equal".
The LaTeX-to-text step needs ``pylatexenc`` (``pip install 'visent[authors-reward]'``), as ``mathruler`` does.
"""

from __future__ import annotations

import logging
import re

__all__ = ["extract_last_boxed", "grade", "hendrycks_form", "missing_dependency", "prm800k_form"]

SYMPY_TIMEOUT_S = 2.0
logger = logging.getLogger(__name__)


class _Malformed(Exception):
    """A Hendrycks normalisation step hit input it cannot handle; the answer is then left as it was."""


# --- the boxed answer -------------------------------------------------------------------------------------


def extract_last_boxed(text: str) -> str:
    """Content of the *last* ``\\boxed{`` with its braces balanced, stripped; the string ``"None"`` otherwise.

    Unlike ``visent.rewards.extract.last_boxed`` this starts from the last ``\\boxed{`` even when it is unclosed
    (then the result is ``"None"``), does not know ``\\fbox`` or escaped braces, and returns the text
    ``"None"`` rather than None — which the grader then compares like any other answer.
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return "None"
    body = text[start + len("\\boxed{") :]
    depth = 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == -1:
                return body[:i].strip()
    return "None"


# --- Hendrycks MATH normalisation (mathruler.math_normalize) ----------------------------------------------

_TEXT_WRAPPED = re.compile(r"^\\text\{(?P<text>.+?)\}$")


def _braced_sqrt(s: str) -> str:
    """``\\sqrt3`` → ``\\sqrt{3}``: a bare argument of one character gets braces."""
    if "\\sqrt" not in s:
        return s
    head, *tails = s.split("\\sqrt")
    out = [head]
    for tail in tails:
        if not tail:
            raise _Malformed("\\sqrt at the end")
        out.append("\\sqrt" + tail if tail[0] == "{" else "\\sqrt{" + tail[0] + "}" + tail[1:])
    return "".join(out)


def _braced_fracs(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{72}`` → ``\\frac{1}{72}``; too short an argument leaves ``s``."""
    head, *tails = s.split("\\frac")
    out = [head]
    for tail in tails:
        out.append("\\frac")
        if not tail:
            raise _Malformed("\\frac at the end")
        if tail[0] == "{":
            out.append(tail)
            continue
        if len(tail) < 2:
            return s
        a, b, rest = tail[0], tail[1], tail[2:]
        out.append("{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest)
    return "".join(out)


def _slash_to_frac(s: str) -> str:
    """``3/4`` (two plain integers written canonically) → ``\\frac{3}{4}``."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def _hendrycks_strip(s: str) -> str:
    for old, new in (
        ("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
        ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""),
    ):  # fmt: skip
        s = s.replace(old, new)
    if "\\text{ " in s:  # units on the right ("5 \\text{ cm}"); more than one is malformed
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise _Malformed("several \\text{ units")
        s = pieces[0]
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "x = 5", "k=3"
        s = sides[1]
    s = _braced_sqrt(s).replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def hendrycks_form(answer: str) -> str:
    """The Hendrycks-MATH canonical string (``mathruler.math_normalize.normalize_answer``)."""
    answer = answer.strip()
    match = _TEXT_WRAPPED.search(answer)
    if match is not None:
        answer = match.group("text").strip()
    try:
        return _hendrycks_strip(answer)
    except _Malformed:
        return answer


# --- PRM800K normalisation (mathruler.grader._normalize) --------------------------------------------------

_UNITS = (
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month",
    "year", "foot", "feet", "inch", "yard",
)  # fmt: skip
_UNIT_RES = [re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _UNITS]
_CIRC = re.compile(r"\^ *\\circ")
_THIN_SPACE_COMMA = re.compile(r",\\! *")
_MINUS_SPACE = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")
_THOUSANDS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_LATEX_SYMBOLS = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))


def _float_or_none(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _near_int(x: float) -> bool:
    try:
        return abs(x - round(x)) <= 1e-7
    except (OverflowError, ValueError):  # inf, nan
        return False


def _drop_thousands_commas(s: str) -> str:
    """``1,234,567`` → ``1234567`` but tuple commas (``1,2``) stay."""
    while True:
        changed = _THOUSANDS.sub(r"\1\3\4", s)
        if changed == s:
            return s
        s = changed


def _is_integer_text(s: str) -> bool:
    x = _float_or_none(_drop_thousands_commas(s))
    return x is not None and _near_int(x)


def _latex_to_text(s: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text

    s = s.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    s = LatexNodes2Text().latex_to_text(s)
    for symbol, word in _LATEX_SYMBOLS:
        s = s.replace(symbol, word)
    return s.strip()


def prm800k_form(expr: str) -> str:
    """The PRM800K canonical string (``mathruler.grader._normalize``): units, ``$``, ``%``, LaTeX, case dropped."""
    match = _TEXT_WRAPPED.search(expr)
    if match is not None:
        expr = match.group("text")
    for old, new in (
        ("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "), (" and ", " , "),
        ("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12"),
    ):  # fmt: skip
        expr = expr.replace(old, new)
    for unit in _UNIT_RES:
        expr = unit.sub("", expr)
    expr = _CIRC.sub("", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _THIN_SPACE_COMMA.sub("", expr)
    x = _float_or_none(expr)
    if x is not None and _near_int(x):
        expr = str(round(x))
    if "\\" in expr:
        try:
            expr = _latex_to_text(expr)
        except ImportError:
            raise
        except Exception:  # noqa: BLE001 - pylatexenc raises anything on malformed LaTeX: keep the text, as mathruler
            logger.debug("latex_to_text failed on %r", expr[:80])
    expr = _MINUS_SPACE.sub("-", expr)
    expr = _MIXED_NUMBER.sub(r"\1+\2", expr)  # "7 3/4" → "7+3/4"
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _is_integer_text(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


# --- comparison -------------------------------------------------------------------------------------------

_NO_EVAL_SUBSTRINGS = ("^{", "^(")
_NO_EVAL_RES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_BRACKETS = "()[]"


def _sympy_allowed(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2 or any(bad in expr for bad in _NO_EVAL_SUBSTRINGS):
        return False
    return not any(r.search(expr) for r in _NO_EVAL_RES)


def _sympy_equal(label: str, pred: str, timeout_s: float) -> bool:
    expr = f"({label})-({pred})"
    if not _sympy_allowed(expr):
        return False

    def difference_is_zero() -> bool:
        import sympy
        from sympy.parsing import sympy_parser

        transformations = sympy_parser.standard_transformations + (
            sympy_parser.implicit_multiplication_application,
        )
        diff = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)
        return sympy.simplify(diff) == 0

    from visent.rewards.symbolic import run_with_deadline

    try:
        return bool(run_with_deadline(difference_is_zero, timeout_s, False))
    except Exception:  # noqa: BLE001 - sympy raises anything on odd input; the authors' grader counts it as wrong
        return False


def _tuple_elements(expr: str) -> list[str]:
    expr = _drop_thousands_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if len(expr) > 2 and expr[0] in _BRACKETS and expr[-1] in _BRACKETS and not any(c in inner for c in _BRACKETS):
        return [e.strip() for e in inner.split(",")]
    return [expr]


def _elements_equal(label: str, pred: str, timeout_s: float) -> bool:
    if _FRACTION.search(label) and _FRACTION.search(pred):
        return label == pred  # unreduced fractions must not be accepted: no sympy here
    if _is_integer_text(label) != _is_integer_text(pred):
        return False  # an integer label needs an exact integer answer (and vice versa)
    return _sympy_equal(label, pred, timeout_s)


def grade(pred: str | None, label: str, timeout_s: float = SYMPY_TIMEOUT_S) -> bool:
    """Whether ``pred`` answers ``label`` (``mathruler.grader.grade_answer(pred, label)``)."""
    if pred is None:
        return False
    if hendrycks_form(label) == hendrycks_form(pred):
        return True
    label_n, pred_n = prm800k_form(label), prm800k_form(pred)
    if label_n == pred_n:
        return True
    if not pred_n:
        return False
    label_parts, pred_parts = _tuple_elements(label_n), _tuple_elements(pred_n)
    if len(label_parts) > 1 and (label_n[0] != pred_n[0] or label_n[-1] != pred_n[-1]):
        return False
    if len(label_parts) != len(pred_parts):
        return False
    return all(_elements_equal(g, p, timeout_s) for g, p in zip(label_parts, pred_parts))


def missing_dependency() -> str | None:
    """A one-line message when ``pylatexenc`` (the LaTeX-to-text step) is not installed, else None."""
    try:
        import pylatexenc.latex2text  # noqa: F401
    except ImportError:
        return (
            "the authors' math grader (reward vepo_authors_math) needs pylatexenc, as mathruler does: "
            "pip install 'visent[authors-reward]' (or pylatexenc)"
        )
    return None

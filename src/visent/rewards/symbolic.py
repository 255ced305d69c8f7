"""Symbolic equivalence of two answers through ``math_verify``, bounded in time.

``math_verify`` can spend seconds or hang on adversarial input (``9^{9^{9^9}}``, deep nesting). Two
guards keep a reward call bounded:

1. a cheap pre-filter (:func:`too_costly`) rejects long strings, nested or huge exponents and big
   factorials before sympy sees them — this is the only guard off the main thread;
2. on the main thread of a POSIX process, a real-time interval timer (``signal.setitimer``) aborts the
   whole parse-and-compare after ``timeout_s`` seconds (sub-second, unlike ``signal.alarm``).

``math_verify``'s own signal-based timeouts are switched off (they clash with ours and refuse to run
off the main thread). A rejected or timed-out comparison counts as "not equal".
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

MAX_SYMBOLIC_CHARS = 160

_NESTED_POWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*[\w.]+\s*\^|\*\*[^*]*\*\*")
_BIG_EXPONENT = re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*\d{3,}")
_BIG_FACTORIAL = re.compile(r"\d{3,}\s*!|\)\s*!|!\s*!")
_FRAC = re.compile(r"\\[dt]?frac")


def too_costly(expr: str) -> bool:
    """Whether ``expr`` is likely to make sympy slow (and so is compared by string only)."""
    if len(expr) > MAX_SYMBOLIC_CHARS:
        return True
    if _NESTED_POWER.search(expr) or _BIG_EXPONENT.search(expr) or _BIG_FACTORIAL.search(expr):
        return True
    return len(_FRAC.findall(expr)) > 6 or expr.count("{") > 40 or expr.count("(") > 40


class _Deadline(BaseException):
    """Raised by the timer; a BaseException so the ``except Exception`` blocks inside sympy/math_verify
    cannot swallow it and keep computing."""


_ARMED = {"on": False}


def _alarm(signum: int, frame: Any) -> None:
    # Only raise while a comparison runs: a signal landing during cleanup must not escape.
    if _ARMED["on"]:
        raise _Deadline()


def _timer_available() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def run_with_deadline(fn: Any, timeout_s: float, default: Any) -> Any:
    """``fn()``, or ``default`` if it takes longer than ``timeout_s`` (main thread only; else no limit).

    Restores any previously installed SIGALRM handler and re-arms a timer that was already running.
    """
    if timeout_s is None or timeout_s <= 0 or not _timer_available():
        return fn()
    previous_handler = signal.signal(signal.SIGALRM, _alarm)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    started = time.monotonic()
    _ARMED["on"] = True
    try:
        return fn()
    except _Deadline:
        logger.debug("symbolic comparison timed out after %.2fs", timeout_s)
        return default
    finally:
        _ARMED["on"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL)
        if previous_delay > 0:
            remaining = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3))


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> tuple:
    from math_verify import parse

    # Wrapping in $...$ makes math_verify read the string as LaTeX (handles \frac, \%, ^\circ, \text{ units}).
    return tuple(parse(f"${expr}$", parsing_timeout=None))


def _silence_math_verify_timeout_warnings() -> None:
    # We disable math_verify's own timeouts on purpose (see module doc); its one-time warning about
    # that would only confuse users.
    try:
        from math_verify import grader, parser

        grader.TIMEOUT_WARNING_SHOWN = True
        parser.TIMEOUT_WARNING_SHOWN = True
    except Exception:  # cosmetic only; older math_verify versions lack the flags
        logger.debug("could not silence math_verify timeout warnings", exc_info=True)


def symbolic_equal(gold: str, pred: str, timeout_s: float = 1.0) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``gold`` (``\\frac{1}{2}`` = ``0.5``, ``50\\%`` = ``0.5``).

    Never raises; returns False when either side fails to parse, is too costly, or time runs out.
    """
    if too_costly(gold) or too_costly(pred):
        return False
    _silence_math_verify_timeout_warnings()

    def compare() -> bool:
        from math_verify import verify

        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))

    try:
        return bool(run_with_deadline(compare, timeout_s, False))
    except Exception:  # sympy raises many things on odd input
        logger.debug("symbolic comparison failed", exc_info=True)
        return False

"""The lab's verdicts in words, in one place: ``visent study``'s tables and ``visent demo``'s report.

A comparison ``a − b`` gets one of three words from its 95% interval (``interval_word``): **yes**
(above zero), **worse** (below zero) or **not distinguishable** (includes zero). The study's nested
interval (``verdict_word``), a study summary's stored interval (``study_interval``) and the demo run's
own paired interval all go through it, and ``verdict_sentence`` spells out the demo's comparison of
its single run with the study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["PRETTY", "interval_word", "method_name", "study_interval", "verdict_sentence", "verdict_word"]


def interval_word(lo: float, hi: float) -> str:
    """``yes`` / ``worse`` / ``not distinguishable`` from a 95% interval ``[lo, hi]`` (NaN: not distinguishable)."""
    if isinstance(lo, (int, float)) and lo > 0:
        return "yes"
    if isinstance(hi, (int, float)) and hi < 0:
        return "worse"
    return "not distinguishable"


def verdict_word(d: Mapping[str, Any]) -> str:
    """The word for a nested difference (``visent.intervals.nested_difference``) from its ``ci95``."""
    lo, hi = d.get("ci95", [float("nan")] * 2)
    return interval_word(lo, hi)


PRETTY = {"grpo": "GRPO", "vepo": "VEPO", "two_stage": "two-stage entropy", "entropy_top20": "entropy top-20%"}


def method_name(method: str | None) -> str:
    return "the warm-start" if method is None else PRETTY.get(method, method)


def study_interval(pair: dict[str, Any]) -> tuple[str, float, float] | None:
    """``(verdict, lo, hi)`` from a study pair: its 95% interval (nested estimate), or ±2 SE for summaries
    written before the study stored one; ``None`` when the pair cannot carry a verdict."""
    if not pair or pair.get("n", 0) < 2 or not math.isfinite(pair.get("se", float("nan"))):
        return None
    ci = pair.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
        lo, hi = float(ci[0]), float(ci[1])
    else:
        lo, hi = pair["mean"] - 2 * pair["se"], pair["mean"] + 2 * pair["se"]
    return interval_word(lo, hi), lo, hi


def verdict_sentence(
    a: str,
    b: str | None,
    noise: float,
    demo: tuple[float, float, float] | None,
    study_pair: dict[str, float] | None,
    not_comparable: str | None = None,
) -> str:
    """Plain language: what the multi-seed study says, what this single run says, and whether they agree.

    ``not_comparable``: why this run must not be compared with the study (e.g. its warm-start is outside
    the band); the study's numbers are still quoted, the run's are not set against them.
    """
    parts = []
    word = study_interval(study_pair or {})
    if word is not None:
        assert study_pair is not None
        m, se, n = study_pair["mean"], study_pair["se"], int(study_pair["n"])
        n_warm = int(study_pair.get("n_warm", 1))
        over = (
            f"over {n_warm} warm-starts × RL seeds ({n} runs)" if n_warm > 1 else f"over {n} seeds"
        )
        wins = f"{int(study_pair['wins'])} of {n} {'runs' if n_warm > 1 else 'seeds'} better"
        verdict, lo, hi = word
        interval = f"95% interval [{lo:+.1f}, {hi:+.1f}]"
        if verdict == "yes":
            parts.append(f"**Yes** — {over}, {method_name(a)} is {m:+.1f} ± {se:.1f} points ({interval}; {wins}).")
        elif verdict == "worse":
            parts.append(f"**No, worse** — {over}, {method_name(a)} is {m:+.1f} ± {se:.1f} points ({interval}; {wins}).")
        else:
            parts.append(
                f"**Not distinguishable** — {over} the difference is {m:+.1f} ± {se:.1f} points ({interval}, "
                f"which includes zero; {wins})."
            )
    elif demo is not None:
        # No study to quote: the run's own interval gives the word, and says it is one run's.
        run_word = interval_word(demo[1], demo[2])
        parts.append(
            {"yes": "**Yes, in this run**", "worse": "**No, worse in this run**",
             "not distinguishable": "**Not distinguishable in this run**"}[run_word]
            + " — no multi-seed study summary under these settings: only this single run speaks."
        )
    else:
        parts.append("No multi-seed study summary for this comparison: only this single run speaks.")
    if demo is None:
        return " ".join(parts)
    m_run, lo_run, hi_run = demo
    where = "above zero" if lo_run > 0 else "below zero" if hi_run < 0 else "includes zero"
    parts.append(
        f"This run (one seed): {m_run:+.1f} points, paired 95% interval [{lo_run:+.1f}, {hi_run:+.1f}] ({where})."
    )
    if not_comparable:
        parts.append(f"**Not compared with the study:** {not_comparable}")
        return " ".join(parts)
    if word is None:
        return " ".join(parts)
    run_word = interval_word(lo_run, hi_run)
    pred = (study_pair or {}).get("predict95")
    have_pred = isinstance(pred, list) and len(pred) == 2 and all(
        isinstance(x, (int, float)) and math.isfinite(x) for x in pred
    )
    inside = have_pred and pred[0] <= m_run <= pred[1]
    spread = (
        f"the range the study expects for one run, [{pred[0]:+.1f}, {pred[1]:+.1f}] (its spread between "
        "warm-starts and between RL seeds)"
        if have_pred
        else "the study's spread"
    )
    if run_word == word[0] and (inside or not have_pred):
        parts.append("This run agrees with the study.")
    elif inside:
        parts.append(
            f"This run's own verdict differs from the study's, but its {m_run:+.1f} lies inside {spread}: "
            "one run from one warm-start can land there. Its paired interval measures only the held-out "
            "examples of this seed's two models, not how another warm-start or RL seed would differ — the "
            "study's verdict is the one to trust."
        )
    else:
        parts.append(
            f"**This run disagrees with the study:** {m_run:+.1f} lies outside {spread}. Either this run is a "
            "rare seed, or it differs from the study's runs in something the study held fixed — check the "
            "warm-start's band and accuracy above against the study's, and the software versions."
        )
    return " ".join(parts)

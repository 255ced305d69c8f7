"""Every comparison of a study restated against an earlier study: old → new, with what changed.

A study that replaces an earlier one (a new recipe, more warm-starts or seeds) has to say, claim by claim,
what became of the earlier claims. ``restated_table`` reads two study summaries (``summary.json``, the
shape ``visent.lab.study_tables.study_summary`` writes, or a shipped ``visent/lab/summaries/study-*.json``)
and renders one row per comparison and noise rate that either holds: the old and the new estimate with
their 95% intervals and verdicts (``visent.lab.verdict``), and the change between the two verdicts.

``visent study --compare-to OLD.json`` appends it to the study's ``results.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from visent.lab.verdict import study_interval

__all__ = ["CHANGES", "change_word", "load_summary", "restated_table"]

#: What ``change_word`` can answer, in the order a reader scans for them.
CHANGES = (
    "reversed",
    "newly distinguishable",
    "no longer distinguishable",
    "unchanged",
    "too few runs",
    "new comparison",
    "not rerun",
)


def load_summary(path: str) -> dict[str, Any]:
    """A study summary from ``path``; a clear ``ValueError`` naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the study summary to compare with ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); expected a study's summary.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), dict):
        raise ValueError(  # noqa: TRY004 (one error type for every bad file: the CLI reports it in one line)
            f"{path}: no 'pairs' object; expected a study's summary.json (visent study writes one)"
        )
    return data


def change_word(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    """One of ``CHANGES`` for a comparison's old and new stored estimate (either may be missing)."""
    if old is None and new is None:
        raise ValueError("change_word: neither study has this comparison")
    if old is None:
        return "new comparison"
    if new is None:
        return "not rerun"
    before = study_interval(dict(old))
    after = study_interval(dict(new))
    if before is None or after is None:  # one run (or no spread): no interval, so no verdict to compare
        return "too few runs"
    before, after = before[0], after[0]
    if before == after:
        return "unchanged"
    if {before, after} == {"yes", "worse"}:
        return "reversed"
    return "newly distinguishable" if before == "not distinguishable" else "no longer distinguishable"


def _estimate(pair: Mapping[str, Any] | None, with_power: bool) -> str:
    if pair is None:
        return "—"
    got = study_interval(dict(pair))
    text = f"{pair['mean']:+.1f}"
    if got is not None:
        word, lo, hi = got
        text += f" [{lo:+.1f}, {hi:+.1f}]" + {"yes": " ↑", "worse": " ↓"}.get(word, "")
    warm = pair.get("n_warm")
    design = f"{int(warm)} × {round(pair['n'] / warm)}" if warm else f"n = {int(pair['n'])}"
    mdd = pair.get("mdd", float("nan"))
    power = f"; detects ≥ {mdd:.1f}" if with_power and isinstance(mdd, (int, float)) and math.isfinite(mdd) else ""
    return f"{text} ({design}{power})"


def _label(key: str, names: Mapping[str, str]) -> tuple[str, str]:
    a, b, noise = key.split("|")
    return f"{names.get(a, a)} − {names.get(b, b)}", f"{100 * float(noise):g}%"


def restated_table(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
) -> list[str]:
    """Markdown lines: every comparison in ``old["pairs"]`` or ``new["pairs"]``, old → new.

    ``names`` maps method keys to the tables' names; ``order`` lists pair keys (``"a|b|noise"``) in the
    order wanted, keys not listed follow in ``new``'s then ``old``'s order. Each estimate is points, mean
    [95% interval] (↑ / ↓ when it excludes zero), with its design (warm-starts × RL seeds) and, for the new
    study, the smallest difference it detects (two-sided 95%, 80% power).
    """
    names = dict(names or {})
    names.setdefault("warm-start", "warm-start")
    old_pairs, new_pairs = old.get("pairs", {}), new.get("pairs", {})
    keys = list(dict.fromkeys([*(order or []), *new_pairs, *old_pairs]))
    keys = [k for k in keys if k in old_pairs or k in new_pairs]
    counts = dict.fromkeys(CHANGES, 0)
    rows = []
    for key in keys:
        before, after = old_pairs.get(key), new_pairs.get(key)
        change = change_word(before, after)
        counts[change] += 1
        comparison, noise = _label(key, names)
        shown = f"**{change}**" if change in CHANGES[:3] else change
        rows.append(
            f"| {comparison} | {noise} | {_estimate(before, False)} | {_estimate(after, True)} | {shown} |"
        )
    if not rows:
        return []
    tally = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
    return [
        "### Every comparison, old → new",
        "",
        (
            f"Old: `{old.get('command', '?')}` ({old.get('runs', '?')} runs). New: `{new.get('command', '?')}` "
            f"({new.get('runs', '?')} runs). Points, mean [95% interval] (warm-starts × RL seeds); ↑ / ↓: the "
            "interval excludes zero. A verdict is the interval's (summaries without one: ±2 SE). "
            f"Changes: {tally}."
        ),
        "",
        "| comparison | noise | old | new | change |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]

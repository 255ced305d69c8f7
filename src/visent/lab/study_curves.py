"""Held-out accuracy *during* RL, per method and noise rate: where each method peaked and whether it kept it.

The study's other tables read each run's accuracy after its last step. A method can climb and then fall
(a run of entropy top-20% reached 94% at step 90 of 120 and ended at 22%, its greedy responses repeating
one word), and a final-step table shows only the fall. Every run writes its held-out greedy accuracy at
the evaluation steps to ``heldout.jsonl`` (``visent.lab.rl``); ``curve_table`` averages those per step
and counts the runs that ended well below their own best.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from visent.lab.study_methods import plain

__all__ = ["CURVE_FILE", "DROP_POINTS", "curve_table", "read_curve"]

CURVE_FILE = "heldout.jsonl"

#: A run "dropped" when its final accuracy is this many points or more below its best evaluation.
DROP_POINTS = 10.0


def read_curve(run_dir: str) -> list[tuple[int, float]]:
    """``[(step, accuracy in [0, 1]), ...]`` from ``run_dir/heldout.jsonl``, by step; ``[]`` when the run
    has none (runs written before the file existed) or it cannot be read (said on stderr: the run's curve
    is left out of the table, its final accuracy is not). Rows without both fields are skipped."""
    from visent.io import read_jsonl

    path = os.path.join(run_dir, CURVE_FILE)
    try:
        rows = read_jsonl(path, missing_ok=True)
    except (OSError, ValueError) as exc:
        print(f"visent study: leaving out the unreadable curve {path}: {exc}", file=sys.stderr)
        return []
    points = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("heldout/accuracy"), (int, float)):
            points[row["step"]] = float(row["heldout/accuracy"])
    return sorted(points.items())


def _fmt(values: Sequence[float]) -> str:
    return f"{100 * sum(values) / len(values):.1f}" if values else "—"


def curve_table(
    results: Sequence[Mapping[str, Any]], noises: Sequence[float], methods: Sequence[str]
) -> list[str]:
    """Markdown: per method × noise, the mean held-out accuracy (%) at every evaluation step over the runs
    that have it, the mean of each run's best, and the runs that ended ``DROP_POINTS`` or more below their
    best. ``results`` carry their curve as ``r["heldout_curve"]`` (``read_curve``); runs without one are
    left out, and no table is drawn when none has one."""
    steps = sorted({s for r in results for s, _ in r.get("heldout_curve") or ()})
    if len(steps) < 2:
        return []
    rows = []
    for noise in sorted({float(n) for n in noises}):
        for m in methods:
            curves = [
                dict(r["heldout_curve"]) for r in results
                if r["method"] == m and float(r["noise"]) == noise and r.get("heldout_curve")
            ]  # fmt: skip
            if not curves:
                continue
            cells = [_fmt([c[s] for c in curves if s in c]) for s in steps]
            best = [max(c.values()) for c in curves]
            final = [c[max(c)] for c in curves]
            dropped = sum(100 * (b - f) >= DROP_POINTS - 1e-9 for b, f in zip(best, final, strict=True))
            rows.append(
                f"| {plain(m)} | {100 * noise:g}% | " + " | ".join(cells)
                + f" | {_fmt(best)} | {dropped} of {len(curves)} |"
            )
    if not rows:
        return []
    return [
        "### Held-out greedy accuracy during RL: mean over runs, % (at each evaluation step)",
        "",
        (
            f"*best*: the mean of each run's highest evaluation. *dropped*: runs whose final accuracy is "
            f"{DROP_POINTS:g} points or more below their own best (a method that learns and then loses it)."
        ),
        "",
        "| method | noise | " + " | ".join(f"step {s}" for s in steps) + " | best | dropped |",
        "|---|---" + "|---" * len(steps) + "|---|---|",
        *rows,
        "",
    ]

"""``visent study``'s premise table: VEPO's premise (``visent.lab.premise``) measured on each method's final
model and on the warm-starts, mean over runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from visent.lab.study_methods import plain

__all__ = ["mean_premise", "premise_tables"]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


_PREMISE_COLS: tuple[tuple[str, str, bool], ...] = (
    ("entropy_anchor", "H anchored", False),
    ("entropy_fork", "H forks", False),
    ("jsd_anchor", "JSD anchored", False),
    ("jsd_rest", "JSD rest", False),
    ("anchor_share_entropy_top", "anchored share of entropy top-20%", True),
    ("anchor_share_vepo_top", "anchored share of VEPO top-20%", True),
    ("overlap_entropy_vepo", "overlap entropy/VEPO top-20%", False),
)


def mean_premise(premises: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in {k for p in premises for k in p}:
        vals = [p.get(key) for p in premises]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def premise_tables(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baselines: Mapping[int, Mapping[str, Any]],
) -> list[str]:
    """Markdown: VEPO's premise (``visent.lab.premise``) on each method's final model, mean over runs."""
    have = [r for r in results if isinstance(r.get("premise"), dict)]
    warm_premises = [b["premise"] for b in baselines.values() if b.get("premise")]
    if not have and not warm_premises:
        return []

    def fmt(v: float | None, pct: bool) -> str:
        if v is None or not math.isfinite(v):
            return "—"
        return f"{100 * v:.0f}%" if pct else f"{v:.3g}"

    pm = mean_premise(warm_premises) if warm_premises else {}
    n_prem = int(pm["n_responses"]) if pm.get("n_responses") else 32
    lines = [
        "### VEPO's premise, measured on greedy held-out responses (entropy/JSD in nats; mean over runs)",
        "",
        (
            "Anchored = the counts read from the image; forks = the free wording choices; rest = every token "
            "that is not anchored. `select/overlap_entropy_top` is the trainer's logged Jaccard overlap of the "
            "trained tokens with the entropy top-20% (mean over the last quarter of training); a model that "
            "stops writing the counts in the task's grammar has fewer anchored tokens to measure."
        ),
        "",
        "| model | noise | " + " | ".join(c[1] for c in _PREMISE_COLS)
        + f" | select/overlap_entropy_top | anchored tokens found (of {2 * n_prem}) |",
        "|---|---" + "|---" * (len(_PREMISE_COLS) + 2) + "|",
    ]
    if pm:
        label = "warm-start (before RL)" if len(warm_premises) == 1 else f"warm-starts (mean of {len(warm_premises)})"
        lines.append(
            f"| {label} | — | " + " | ".join(fmt(pm.get(k), pct) for k, _, pct in _PREMISE_COLS)
            + f" | — | {fmt(pm.get('n_anchor'), False)} |"
        )
    for n in noises:
        for m in methods:
            rows = [r for r in have if r["method"] == m and float(r["noise"]) == float(n)]
            if not rows:
                continue
            cells = []
            for k, _, pct in _PREMISE_COLS:
                vals = [r["premise"].get(k) for r in rows]
                vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
                cells.append(fmt(_mean(vals), pct) if vals else "—")
            ov = [r.get("overlap_entropy_top") for r in rows]
            ov = [v for v in ov if isinstance(v, (int, float)) and math.isfinite(v)]
            found = [float(r["premise"].get("n_anchor", 0)) for r in rows]
            lines.append(
                f"| {plain(m)} | {100 * n:g}% | " + " | ".join(cells)
                + f" | {fmt(_mean(ov), False) if ov else '—'} | {fmt(_mean(found), False)} |"
            )
    lines.append("")
    return lines

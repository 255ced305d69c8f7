"""Turning scored predictions into numbers and tables: per-benchmark summaries (intervals from
``visent.intervals``), Markdown tables.

A record is one scored example as stored in ``predictions.jsonl`` (see ``harness``): a dict with at least
``benchmark``, ``task``, ``score`` (against ``answer``), ``score_clean`` (against ``clean_answer``),
``is_noisy``, ``parse_failed``; detection rows also carry ``response`` and ``clean_answer``/``answer``
for mAP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from visent.intervals import example_mean_interval, wilson_interval


def _accuracy_block(scores: Sequence[float], sampled: bool = False) -> dict[str, Any]:
    """Mean score with its 95% interval: Wilson for one response per example (each score a 0/1 outcome),
    the t interval over examples (:func:`example_mean_interval`) when each score averages K samples."""
    n = len(scores)
    total = float(sum(scores))
    lo, hi = example_mean_interval(scores) if sampled else wilson_interval(total, n)
    return {"accuracy": total / n if n else 0.0, "ci95": [lo, hi]}


def _pass_block(rows: Sequence[dict[str, Any]], key: str, fallback: str) -> tuple[float, list[float]]:
    """pass@K: the share of examples with at least one right sample (the best of the K scores); its
    per-example outcomes are independent 0/1 draws, so the Wilson interval over examples applies."""
    values = [float(r.get(key, r[fallback])) for r in rows]
    lo, hi = wilson_interval(min(float(sum(values)), len(values)), len(values))
    return (sum(values) / len(values) if values else 0.0), [lo, hi]


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-benchmark metrics.

    Returns ``{benchmark: {"n", "tasks", "accuracy", "ci95", "accuracy_clean", "ci95_clean", "n_noisy",
    "parse_fail_rate", "label_errors", "by_task": {task: {"n", "accuracy", "ci95"}}, ["map50", "map50_clean"]}}``.
    With K > 1 samples per example (records carrying ``k``), ``accuracy`` is avg@K (the mean over examples
    of each example's mean score, interval over examples, see :func:`example_mean_interval`) and the block
    adds ``"k"``, ``"pass_at_k"``, ``"ci95_pass"``, ``"pass_at_k_clean"``, ``"ci95_pass_clean"``;
    ``parse_fail_rate`` is then the share of samples without a parsable answer.
    ``label_errors`` counts rows whose label the verifier could not use (scored 0; fix the data).
    ``accuracy`` is against ``answer`` (what training saw, possibly noisy), ``accuracy_clean`` against
    ``clean_answer``; they coincide when no row is noisy. ``map50`` appears for detection rows.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["benchmark"], []).append(record)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(grouped):
        rows = grouped[name]
        k = max(int(r.get("k", 1)) for r in rows)
        sampled = k > 1
        block: dict[str, Any] = {"n": len(rows), "tasks": sorted({r["task"] for r in rows})}
        block.update(_accuracy_block([r["score"] for r in rows], sampled))
        clean = _accuracy_block([r["score_clean"] for r in rows], sampled)
        block["accuracy_clean"], block["ci95_clean"] = clean["accuracy"], clean["ci95"]
        if sampled:
            block["k"] = k
            block["pass_at_k"], block["ci95_pass"] = _pass_block(rows, "pass", "score")
            block["pass_at_k_clean"], block["ci95_pass_clean"] = _pass_block(rows, "pass_clean", "score_clean")
        block["n_noisy"] = sum(bool(r.get("is_noisy")) for r in rows)
        # A bool for one response per example; the share of unparsable samples when there are K.
        block["parse_fail_rate"] = sum(float(r.get("parse_failed") or 0) for r in rows) / len(rows)
        # Rows whose *label* the verifier could not use (a data problem): scored 0, so they must be visible.
        block["label_errors"] = sum(bool(r.get("label_error")) for r in rows)
        by_task: dict[str, Any] = {}
        for task in block["tasks"]:
            task_rows = [r for r in rows if r["task"] == task]
            by_task[task] = {"n": len(task_rows), **_accuracy_block([r["score_clean"] for r in task_rows], sampled)}
        block["by_task"] = by_task
        detection = [r for r in rows if r["task"] == "detection"]
        if detection:
            from visent.rewards.detection import map50, parse_detections
            from visent.rewards.extract import answer_region

            preds = [parse_detections(answer_region(r.get("response", ""))) or [] for r in detection]
            block["map50"] = map50(preds, [r.get("answer", "[]") for r in detection])["map50"]
            block["map50_clean"] = map50(preds, [r.get("clean_answer", "[]") for r in detection])["map50"]
        out[name] = block
    return out


def pct(x: float | None, digits: int = 1, *, suffix: str = "", missing: str = "-") -> str:
    """``0.531 -> "53.1"`` (``suffix="%"``: ``"53.1%"``); ``missing`` for ``None``. Every report's percent."""
    return missing if x is None else f"{100 * x:.{digits}f}{suffix}"


def _with_ci(value: float, ci: Sequence[float]) -> str:
    """``"53.1 [44.5, 61.5]"``: a rate and its interval, in percent."""
    return f"{pct(value)} [{pct(ci[0])}, {pct(ci[1])}]"


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: benchmark, n, accuracy [95% CI] (clean labels), vs noisy labels, parse failures.

    With K > 1 samples per example the accuracy column becomes avg@K and K and pass@K columns are added."""
    sampled = any(b.get("k", 1) > 1 for b in summary.values())
    if sampled:
        lines = [
            ("| benchmark | task | n | K | avg@K % [95% CI] | pass@K % [95% CI] | vs. training labels % "
             "| noisy rows | unparsable % |"),
            "|---|---|---:|---:|---|---|---|---:|---:|",
        ]
    else:
        lines = [
            "| benchmark | task | n | accuracy % [95% CI] | vs. training labels % | noisy rows | unparsable % |",
            "|---|---|---:|---|---|---:|---:|",
        ]
    for name, b in summary.items():
        acc = _with_ci(b["accuracy_clean"], b["ci95_clean"])
        if sampled:
            # A benchmark of this run evaluated with one response per example has pass@1 = avg@1.
            best = _with_ci(b["pass_at_k_clean"], b["ci95_pass_clean"]) if "pass_at_k_clean" in b else acc
            acc = f"{b.get('k', 1)} | {acc} | {best}"
        elif "map50_clean" in b:
            acc += f"; mAP@0.5 {pct(b['map50_clean'])}"
        noisy = _with_ci(b["accuracy"], b["ci95"]) if b["n_noisy"] else "same"
        lines.append(
            f"| {name} | {', '.join(b['tasks'])} | {b['n']} | {acc} | {noisy} | {b['n_noisy']} | "
            f"{pct(b['parse_fail_rate'])} |"
        )
    return "\n".join(lines) + "\n"

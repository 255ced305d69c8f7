"""Interval math, summaries and atomic writes of the evaluation report."""

from __future__ import annotations

import math
import os

import pytest

from visent import intervals
from visent.eval.report import markdown_table, pct, summarize
from visent.intervals import wilson_interval
from visent.io import write_atomic


def _wilson_by_quadratic(s: float, n: int, z: float) -> tuple[float, float]:
    """Independent reference: the Wilson bounds are the roots p of (p̂ - p)^2 = z^2 p (1 - p) / n."""
    p_hat = s / n
    # (1 + z²/n) p² - (2 p̂ + z²/n) p + p̂² = 0
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_hand_value():
    # 8 of 10 at 95%: the textbook Wilson interval is [0.4902, 0.9433] (the Wald one would be [0.552, 1.048]).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


@pytest.mark.parametrize("n", [1, 7, 41, 1000])
def test_wilson_matches_quadratic_reference(n):
    z = intervals.Z95
    for s in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        assert wilson_interval(s, n) == pytest.approx(_wilson_by_quadratic(s, n, z), abs=1e-12)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2  # never a degenerate [0, 0] like the Wald interval
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _record(bench, score, clean, noisy=False, task="counting", parse_failed=False):
    return {
        "benchmark": bench,
        "id": f"{bench}{score}{clean}{noisy}",
        "task": task,
        "score": score,
        "score_clean": clean,
        "is_noisy": noisy,
        "parse_failed": parse_failed,
    }


def test_summarize_separates_clean_and_training_labels():
    # 4 rows: 2 noisy ones where the model answered the clean label (score 0 vs noisy, 1 vs clean)
    records = [
        _record("a", 1.0, 1.0),
        _record("a", 0.0, 0.0, parse_failed=True),
        _record("a", 0.0, 1.0, noisy=True),
        _record("a", 0.0, 1.0, noisy=True),
        _record("b", 1.0, 1.0, task="grounding"),
    ]
    summary = summarize(records)
    a = summary["a"]
    assert a["n"] == 4 and a["n_noisy"] == 2
    assert a["accuracy"] == 0.25 and a["accuracy_clean"] == 0.75
    assert a["ci95_clean"] == pytest.approx(list(wilson_interval(3, 4)))
    assert a["parse_fail_rate"] == 0.25 and a["label_errors"] == 0
    assert summary["b"]["by_task"]["grounding"]["n"] == 1
    table = markdown_table(summary)
    assert "| a | counting | 4 | 75.0 [" in table and "| 25.0 [" in table
    assert "| b | grounding | 1 | 100.0 [" in table and "| same |" in table


def test_summarize_reports_map50_for_detection():
    gt = '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]'
    rows = [
        {
            **_record("d", 1.0, 1.0, task="detection"),
            "id": "1",
            "answer": gt,
            "clean_answer": gt,
            "response": '<answer>[{"bbox_2d": [0, 0, 10, 10], "label": "cat", "score": 0.9}]</answer>',
        },
        {
            **_record("d", 0.0, 0.0, task="detection"),
            "id": "2",
            "answer": gt,
            "clean_answer": gt,
            "response": "none",
        },
    ]
    # one TP on image 1, image 2's cat missed: recall 1/2 at precision 1 -> AP 0.5
    assert summarize(rows)["d"]["map50_clean"] == pytest.approx(0.5)


def test_write_atomic_replaces_or_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_atomic(target, "old")
    assert target.read_text() == "old"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new content that must not half-appear")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # the temporary file is gone
    monkeypatch.undo()
    write_atomic(target, "new")
    assert target.read_text() == "new"


def test_pct_formats_every_report_percent():
    assert pct(0.5312) == "53.1" and pct(0.5312, suffix="%") == "53.1%" and pct(0.5, 0) == "50"
    assert pct(None) == "-" and pct(None, missing="—") == "—"

"""`visent study`: the tables' statistics, and a micro study that resumes without recomputing."""

from __future__ import annotations

import json
import os
import statistics

import pytest

from visent.lab import study


def _result(method: str, noise: float, seed: int, acc: float, ent0: float = 0.5, ent1: float = 0.4) -> dict:
    return {
        "method": method,
        "noise": noise,
        "seed": seed,
        "after": {"accuracy": acc, "n": 100},
        "entropy_first": ent0,
        "entropy_last_quarter": ent1,
    }


def test_tables_report_mean_and_sample_std_per_method_and_noise():
    vepo = [0.41, 0.47, 0.50]
    grpo = [0.30, 0.35]
    results = [_result("vepo", 0.5, s, a) for s, a in enumerate(vepo)]
    results += [_result("grpo", 0.5, s, a) for s, a in enumerate(grpo)]
    results += [_result("two_stage", 1.0, 0, 0.2)]
    text = study.results_tables(
        results, {"accuracy": 0.25, "n": 100}, [0.5, 1.0], ["grpo", "vepo", "two_stage"], expected_seeds=3
    )
    want_vepo = f"{100 * statistics.mean(vepo):.1f} ± {100 * statistics.stdev(vepo):.1f} (3)"
    want_grpo = f"{100 * statistics.mean(grpo):.1f} ± {100 * statistics.stdev(grpo):.1f} (2)"
    assert want_vepo in text and want_grpo in text
    vepo_row = next(line for line in text.splitlines() if line.startswith("| **VEPO**"))
    assert f"**{want_vepo}**" in vepo_row  # best of its noise column is bold
    assert "| warm-start (before RL) | 25.0 | 25.0 |" in text
    # The schedule table has the paper's shape: noise rows (highest first), method columns.
    sched = text[text.index("### Entropy schedule") :]
    rows = [line for line in sched.splitlines() if line.startswith(("| 100%", "| 50%"))]
    assert rows[0].startswith("| 100%") and "20.0 (1)" in rows[0]
    assert "Runs finished: 6 of 18 (**partial study**)" in text


def test_bad_arguments_fail_before_any_work(tmp_path, capsys):
    assert study.main(["--out", str(tmp_path), "--methods", "grpo", "nope"]) == 2
    assert "valid: grpo" in capsys.readouterr().err
    assert study.main(["--out", str(tmp_path), "--noise", "1.5"]) == 2
    assert not os.listdir(tmp_path)


def test_micro_study_runs_then_resume_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "study"
    argv = [
        "--out",
        str(out),
        "--quick",
        "--methods",
        "grpo",
        "vepo",
        "--noise",
        "0.5",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--heldout",
        "4",
        "--no-progress",
    ]
    assert study.main(argv) == 0
    first = capsys.readouterr().out
    assert "2 runs to do (0 already finished)" in first
    results = {m: out / "runs" / m / "noise-0.5" / "seed-0" / "result.json" for m in ("grpo", "vepo")}
    stamps = {m: p.stat().st_mtime_ns for m, p in results.items()}
    for m, p in results.items():
        res = json.loads(p.read_text())
        assert res["method"] == m and res["noise"] == 0.5 and res["seed"] == 0
    tables = (out / "results.md").read_text()
    assert "Runs finished: 2 of 2." in tables
    grpo_acc = json.loads(results["grpo"].read_text())["after"]["accuracy"]
    assert f"{100 * grpo_acc:.1f} (1)" in tables

    # Resume: nothing is recomputed; a removed result is redone.
    assert study.main(argv) == 0
    assert "0 runs to do (2 already finished)" in capsys.readouterr().out
    assert {m: p.stat().st_mtime_ns for m, p in results.items()} == stamps
    os.remove(results["vepo"])
    assert study.main(argv) == 0
    assert "1 runs to do (1 already finished)" in capsys.readouterr().out
    assert results["grpo"].stat().st_mtime_ns == stamps["grpo"]
    assert results["vepo"].exists()

    # Different shared settings in the same folder are refused rather than mixed into the tables.
    with pytest.raises(SystemExit, match="different settings"):
        study.main([*argv, "--steps", "3"])


def test_paired_differences_match_a_hand_computation():
    a = [0.50, 0.45, 0.40, 0.52]
    b = [0.40, 0.45, 0.42, 0.47]
    results = [_result("vepo", 0.0, s, x) for s, x in enumerate(a)]
    results += [_result("grpo", 0.0, s, x) for s, x in enumerate(b[:3])]  # seed 3 missing for grpo
    d = study.paired_differences(results, "vepo", "grpo", 0.0, None)
    diffs = [100 * (x - y) for x, y in zip(a[:3], b[:3])]  # only the seeds both have: +10, 0, -2
    assert d["n"] == 3 and d["mean"] == pytest.approx(statistics.mean(diffs))
    assert d["se"] == pytest.approx(statistics.stdev(diffs) / 3**0.5)
    assert (d["wins"], d["ties"], d["losses"]) == (1, 1, 1)
    # Against the warm-start: every seed minus the baseline accuracy.
    w = study.paired_differences(results, "vepo", None, 0.0, {"accuracy": 0.40, "n": 100})
    assert w["n"] == 4 and w["mean"] == pytest.approx(100 * statistics.mean(a) - 40.0)
    assert study.paired_differences(results, "vepo", "random20", 0.0, None) is None
    table = "\n".join(study.paired_table(results, [0.0], ["grpo", "vepo"], {"accuracy": 0.40, "n": 100}))
    assert f"| VEPO − GRPO | {d['mean']:+.1f} ± {d['se']:.1f} (1/1/1 of 3) |" in table
    summary = study.study_summary(results, {"accuracy": 0.40, "n": 100}, [0.0], ["grpo", "vepo"], task="tally",
                                  command="visent study x")
    assert summary["pairs"]["vepo|grpo|0"] == d and summary["seeds"] == 4

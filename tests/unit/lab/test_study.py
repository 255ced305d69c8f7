"""`visent study`: the tables' statistics, and a micro study that resumes without recomputing."""

from __future__ import annotations

import json
import os
import shutil
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
        "--warm-seeds",
        "2",
        "--workers",
        "1",
        "--heldout",
        "4",
        "--no-progress",
    ]
    assert study.main(argv) == 0
    first = capsys.readouterr().out
    assert "2 warm-start(s) to train" in first and "4 runs to do (0 already finished)" in first
    results = {
        (m, w): out / "runs" / m / "noise-0.5" / f"warm-{w}" / "seed-0" / "result.json"
        for m in ("grpo", "vepo")
        for w in (0, 1)
    }
    stamps = {k: p.stat().st_mtime_ns for k, p in results.items()}
    warm = {w: json.loads((out / f"warm-{w}.json").read_text()) for w in (0, 1)}
    assert warm[0]["path"] != warm[1]["path"]
    for (m, w), p in results.items():
        res = json.loads(p.read_text())
        assert res["method"] == m and res["noise"] == 0.5 and res["seed"] == 0
        # Each run starts from its own warm-start's measured accuracy.
        assert res["before"]["accuracy"] == warm[w]["accuracy"]
    tables = (out / "results.md").read_text()
    assert "Runs finished: 4 of 4." in tables
    # Each run's held-out curve (its heldout.jsonl) reaches the tables: step 0 is the warm-start's accuracy.
    curves = tables.split("### Held-out greedy accuracy during RL")[1]
    curve_row = next(line for line in curves.splitlines() if line.startswith("| GRPO | 50% |"))
    start = statistics.mean(warm[w]["accuracy"] for w in (0, 1))
    assert curve_row.split(" | ")[2] == f"{100 * start:.1f}"
    grpo_accs = [json.loads(results[("grpo", w)].read_text())["after"]["accuracy"] for w in (0, 1)]
    assert f"{100 * statistics.mean(grpo_accs):.1f} ± {100 * statistics.stdev(grpo_accs):.1f} (2)" in tables
    summary = json.loads((out / "summary.json").read_text())
    assert [w["warm_seed"] for w in summary["warmstarts"]] == [0, 1]
    assert summary["warm_seeds"] == 2 and summary["seeds"] == 1
    pair = summary["pairs"]["grpo|warm-start|0.5"]
    want = statistics.mean(100 * (grpo_accs[w] - warm[w]["accuracy"]) for w in (0, 1))
    assert pair["n_warm"] == 2 and pair["mean"] == pytest.approx(want)

    # Resume: nothing is recomputed; a removed result is redone.
    assert study.main(argv) == 0
    assert "0 runs to do (4 already finished)" in capsys.readouterr().out
    assert {k: p.stat().st_mtime_ns for k, p in results.items()} == stamps
    os.remove(results[("vepo", 1)])
    assert study.main(argv) == 0
    assert "1 runs to do (3 already finished)" in capsys.readouterr().out
    assert results[("grpo", 1)].stat().st_mtime_ns == stamps[("grpo", 1)]
    assert results[("vepo", 1)].exists()

    # A run outside the design asked for (an RL seed beyond --seeds, as a folder grown for a power study
    # has) stays out of its tables and summary.
    extra_seed = results[("grpo", 0)].parent.parent / "seed-1"
    extra_seed.mkdir()
    grown = json.loads(results[("grpo", 0)].read_text())
    grown.update(seed=1, after={**grown["after"], "accuracy": 1.0 - grown["after"]["accuracy"]})
    (extra_seed / "result.json").write_text(json.dumps(grown))
    assert study.main([*argv, "--tables-only"]) == 0
    assert json.loads((out / "summary.json").read_text())["pairs"] == summary["pairs"]
    assert "Runs finished: 4 of 4." in (out / "results.md").read_text()
    shutil.rmtree(extra_seed)

    # Restated against an earlier summary: the earlier study is this one with GRPO's gain moved far
    # below zero, so that row's verdict must change and the others must not.
    earlier = json.loads(json.dumps(summary))
    moved = earlier["pairs"]["grpo|warm-start|0.5"]
    moved.update(mean=-500.0, ci95=[-600.0, -400.0], se=10.0, n=4.0)
    del earlier["pairs"]["vepo|grpo|0.5"]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    assert study.main([*argv, "--tables-only", "--compare-to", str(tmp_path / "earlier.json")]) == 0
    tables = (out / "results.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in tables.splitlines() if " − " in line and "| 50% |" in line}
    assert "### Every comparison, old → new" in tables
    assert "-500.0 [-600.0, -400.0] ↓" in rows["GRPO − warm-start"]
    assert rows["GRPO − warm-start"].endswith("|") and "unchanged" not in rows["GRPO − warm-start"]
    assert rows["VEPO − GRPO"].endswith("| new comparison |")
    assert rows["VEPO − warm-start"].split(" | ")[2] != "—"  # the old estimate is shown beside the new
    # A summary that is not one is refused before any work, naming the file.
    (tmp_path / "bad.json").write_text('{"runs": 3}')
    assert study.main([*argv, "--compare-to", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: no 'pairs'" in capsys.readouterr().err

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
    half = 4.303 * d["se"]  # t(0.975, 2 df)
    ci = f"[{d['mean'] - half:+.1f}, {d['mean'] + half:+.1f}]"
    # Smallest detectable difference at these spreads: (t(.975, 2) + t(.8, 2)) · SE (one seed per warm-start).
    mdd = (4.303 + 1.061) * d["se"]
    assert abs(d["mdd"] - mdd) < 0.01 * mdd
    assert f"| VEPO − GRPO | {d['mean']:+.1f} ± {d['se']:.1f} {ci} (1/1/1 of 3; detects ≥ {d['mdd']:.1f}) |" in table
    summary = study.study_summary(results, {"accuracy": 0.40, "n": 100}, [0.0], ["grpo", "vepo"], task="tally",
                                  command="visent study x")
    # (json: NaN fields — the between-warm-start spread of a one-warm-start study — compare equal as text.)
    assert json.dumps(summary["pairs"]["vepo|grpo|0"]) == json.dumps(d) and summary["seeds"] == 4


def test_paired_differences_use_both_warm_starts_and_rl_seeds():
    """Two warm-starts: VEPO − GRPO is +10 from one and −2 from the other, ±1 across RL seeds.

    The estimate is the mean of the warm-start means (+4), and its spread is dominated by the warm-starts
    (a naive SE over the 6 runs would be ~2.7 and call it a gain; the nested one cannot).
    """
    results = []
    for w, shift in ((0, 0.10), (1, -0.02)):
        for s, e in enumerate((-0.01, 0.0, 0.01)):
            results.append({**_result("grpo", 0.0, s, 0.40), "warm_seed": w})
            results.append({**_result("vepo", 0.0, s, 0.40 + shift + e), "warm_seed": w})
    d = study.paired_differences(results, "vepo", "grpo", 0.0, None)
    assert d["mean"] == pytest.approx(4.0) and d["n_warm"] == 2 and d["n"] == 6
    assert d["warm_means"] == pytest.approx([10.0, -2.0])
    assert d["se"] == pytest.approx(statistics.stdev([10.0, -2.0]) / 2**0.5)
    assert d["ci95"][0] < 0 < d["ci95"][1] and study.verdict_word(d) == "not distinguishable"
    # Against the warm-start: each run minus its own warm-start's accuracy.
    base = {0: {"accuracy": 0.30, "n": 100}, 1: {"accuracy": 0.50, "n": 100}}
    w = study.paired_differences(results, "grpo", None, 0.0, base)
    assert w["warm_means"] == pytest.approx([10.0, -10.0])


def test_cells_give_each_noise_rate_its_own_methods(tmp_path, capsys):
    assert study._parse_cells(["0:grpo,vepo", "0.5:grpo"]) == {0.0: ["grpo", "vepo"], 0.5: ["grpo"]}
    from visent.lab.rl import METHODS

    # "all" is every lab method, once, in the registry's order, whatever else the cell names.
    assert study._parse_cells(["0:vepo,all"]) == {0.0: ["vepo"] + [m for m in METHODS if m != "vepo"]}
    assert sorted(study._parse_cells(["0.5:all"])[0.5]) == sorted(METHODS)
    assert study.main(["--out", str(tmp_path), "--cells", "0.5"]) == 2
    assert "NOISE:METHOD" in capsys.readouterr().err
    assert study.main(["--out", str(tmp_path), "--cells", "0:grpo,nope"]) == 2
    assert not os.listdir(tmp_path)


def test_tables_list_each_warm_start_and_flag_one_outside_its_band():
    base = {
        0: {"accuracy": 0.453, "n": 128, "band": [0.4, 0.6], "band_reached": True, "band_accuracy": 0.547,
            "sft_steps": 175, "band_rollbacks": 0},
        1: {"accuracy": 0.90, "n": 128, "band": [0.4, 0.6], "band_reached": False, "band_accuracy": 0.95,
            "sft_steps": 600, "band_rollbacks": 6},
    }
    results = [{**_result("grpo", 0.0, 0, 0.50), "warm_seed": 0}, {**_result("grpo", 0.0, 0, 0.80), "warm_seed": 1}]
    text = study.results_tables(results, base, [0.0], ["grpo"], expected_runs=2)
    assert "| 0 | 175 | 40–60% | yes | 54.7% | 45.3% (n = 128) | 0 |" in text
    assert "| 1 | 600 | 40–60% | **NO** | 95.0% | 90.0% (n = 128) | 6 |" in text
    assert "| warm-start (before RL) | 67.7 (45.3, 90.0) |" in text
    summary = study.study_summary(results, base, [0.0], ["grpo"], task="tally", command="x")
    assert [w["band_reached"] for w in summary["warmstarts"]] == [True, False] and summary["band"] == [0.4, 0.6]
    # GRPO − warm-start pairs each run with its own warm-start: +4.7 and −10.0.
    assert summary["pairs"]["grpo|warm-start|0"]["warm_means"] == pytest.approx([4.7, -10.0])


def test_every_lab_method_has_a_table_row_a_gain_and_a_comparison():
    """Issue #21 item 5 runs every lab method: each must appear in an accuracy table, in the gain table
    (method − its warm-start, computed per run) and in at least one paired comparison."""
    from visent.lab.rl import METHODS
    from visent.lab.study_methods import LABELS, PAIRS, plain

    methods = list(METHODS)
    results = []
    for i, m in enumerate(methods):
        for s in range(2):
            results.append(_result(m, 0.0, s, 0.40 + 0.01 * i + 0.02 * s))
    base = {"accuracy": 0.40, "n": 100}
    text = study.results_tables(results, base, [0.0], methods, expected_seeds=2)
    acc_tables = text[: text.index("### What RL gained")]
    gains = text[text.index("### What RL gained") : text.index("### Paired differences")]
    paired = text[text.index("### Paired differences") :]
    for i, m in enumerate(methods):
        assert f"| {LABELS[m]} |" in acc_tables, m
        # Gain of method i: mean over its two seeds of (0.40 + 0.01 i + 0.02 s) − 0.40, in points.
        row = next(line for line in gains.splitlines() if line.startswith(f"| {plain(m)} |"))
        assert f"{i + 1.0:+.1f} ± 1.0" in row, (m, row)
        assert any(m in (a, b) for a, b in PAIRS if b is not None), m
    vppo_row = next(line for line in paired.splitlines() if line.startswith("| VPPO − GRPO |"))
    i, j = methods.index("vppo"), methods.index("grpo")
    assert f"{i - j:+.1f}" in vppo_row  # every seed differs by exactly (i − j) points
    assert "### Perception-aware baselines" in acc_tables
    # Without a baseline method the table is not drawn.
    assert "Perception-aware" not in study.results_tables(results, base, [0.0], ["grpo", "vepo"])


def test_progress_lines_count_runs_and_estimate_what_is_left():
    assert study._eta(600.0, 2, 8) == ", ~30 min left"  # 300 s per run, 6 runs left, one worker
    assert study._eta(3600.0, 1, 3) == ", ~2 h 00 min left"
    assert study._eta(10.0, 4, 4) == "" and study._eta(0.0, 0, 4) == ""
    # Two workers share what is left: 90 s runs, 238 left -> 119 rounds of 90 s, not 238.
    assert study._eta(180.0, 2, 240, n_workers=2) == ", ~2 h 58 min left"
    # The last run left is on one worker, however many there are.
    assert study._eta(400.0, 4, 5, n_workers=2) == ", ~2 min left"

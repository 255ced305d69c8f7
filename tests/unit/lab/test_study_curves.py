"""visent.lab.study_curves: held-out accuracy during RL, per method and noise rate."""

from __future__ import annotations

import json

from visent.lab.study_curves import DROP_POINTS, curve_table, read_curve
from visent.lab.study_tables import load_results


def run(method: str, noise: float, curve: list[tuple[int, float]]) -> dict:
    return {"method": method, "noise": noise, "heldout_curve": curve}


def test_read_curve_sorts_by_step_and_skips_what_it_cannot_read(tmp_path, capsys):
    (tmp_path / "heldout.jsonl").write_text(
        "\n".join([
            json.dumps({"step": 60, "heldout/accuracy": 0.75}),
            json.dumps({"step": 0, "heldout/accuracy": 0.5}),
            json.dumps({"step": 30}),  # no accuracy
            json.dumps({"step": "90", "heldout/accuracy": 0.9}),  # not a step number
            "",
        ])
    )  # fmt: skip
    assert read_curve(str(tmp_path)) == [(0, 0.5), (60, 0.75)]
    assert read_curve(str(tmp_path / "missing")) == []
    (tmp_path / "heldout.jsonl").write_text("{broken\n")
    assert read_curve(str(tmp_path)) == []
    err = capsys.readouterr().err
    assert "unreadable curve" in err and str(tmp_path / "heldout.jsonl") in err


def test_curve_table_means_each_step_and_counts_runs_that_lost_their_best():
    results = [
        run("grpo", 0.0, [(0, 0.50), (60, 0.70), (120, 0.80)]),
        run("grpo", 0.0, [(0, 0.60), (60, 0.90), (120, 0.85)]),  # 5 points below its best: kept
        run("vepo", 0.0, [(0, 0.50), (60, 0.95), (120, 0.20)]),  # 75 below: dropped
        run("vepo", 0.0, [(0, 0.50), (120, 0.45)]),  # no step-60 point: left out of that mean only
        run("grpo", 0.5, []),  # no curve (an older run): left out
        run("grpo", 0.5, [(0, 0.50), (60, 0.50), (120, 0.50 - DROP_POINTS / 100)]),  # exactly the threshold
    ]
    lines = curve_table(results, [0.5, 0.0], ["grpo", "vepo"])
    assert lines[0].startswith("### Held-out greedy accuracy during RL")
    assert "| method | noise | step 0 | step 60 | step 120 | best | dropped |" in lines
    rows = [line for line in lines if line.startswith("| ") and "%" in line.split(" | ")[1]]
    assert rows == [
        "| GRPO | 0% | 55.0 | 80.0 | 82.5 | 85.0 | 0 of 2 |",
        "| VEPO | 0% | 50.0 | 95.0 | 32.5 | 72.5 | 1 of 2 |",
        "| GRPO | 50% | 50.0 | 50.0 | 40.0 | 50.0 | 1 of 1 |",
    ]


def test_no_curves_no_table():
    assert curve_table([run("grpo", 0.0, [])], [0.0], ["grpo"]) == []


def test_load_results_attaches_each_runs_curve(tmp_path):
    d = tmp_path / "runs" / "grpo" / "noise-0" / "warm-1" / "seed-0"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"method": "grpo", "noise": 0.0, "seed": 0}))
    (d / "heldout.jsonl").write_text(json.dumps({"step": 0, "heldout/accuracy": 0.25}) + "\n")
    (r,) = load_results(str(tmp_path))
    assert r["warm_seed"] == 1 and r["heldout_curve"] == [(0, 0.25)]

"""`visent demo`: the lab's methods are the configs' methods, and a --quick demo writes honest artefacts."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from visent.lab import rl
from visent.lab.demo import DEMO_RUNS
from visent.lab.demo import main as demo_main

# Knobs a method YAML decides (everything else is a lab-wide override).
METHOD_KNOBS = (
    "token_score",
    "selection_ratio",
    "selection_granularity",
    "selection_mode",
    "score_alpha",
    "perturbation",
    "perturbation_strength",
    "entropy_schedule",
    "entropy_coef_max",
    "entropy_coef_min",
    "entropy_switch",
    "loss_aggregation",
)


@pytest.mark.parametrize("method", list(rl.METHODS))
def test_lab_config_keeps_the_method_knobs_of_its_yaml_and_the_lab_settings(method, tmp_path):
    settings = rl.RLSettings(
        task="classification",
        steps=7,
        prompts_per_step=3,
        num_generations=4,
        max_completion_length=20,
        learning_rate=3e-4,
    )
    config = rl.lab_config(
        method, settings, model_path="tiny:qwen2_5_vl", noise=0.5, seed=3, output_dir=str(tmp_path)
    )
    with open(rl.method_config_path(method)) as f:
        data = yaml.safe_load(f)
    lab_overrides = rl.METHODS[method][1]
    for knob in METHOD_KNOBS:
        if knob in lab_overrides:
            assert getattr(config, knob) == pytest.approx(lab_overrides[knob]), knob
        elif knob in data:
            assert getattr(config, knob) == data[knob], knob
    # The lab's own settings replace the paper-scale ones.
    assert config.model_name_or_path == "tiny:qwen2_5_vl"
    assert config.dataset == "lab:classification" and config.label_noise == 0.5
    assert config.max_steps == 7 and config.num_generations == 4 and config.max_completion_length == 20
    prompts = int(3 * rl.ROLLOUT_SCALE.get(method, 1.0) + 0.5)  # the rollout-matched control generates more
    assert config.per_device_train_batch_size == prompts * 4 and config.learning_rate == pytest.approx(3e-4)
    assert config.seed == 3 and config.perturbation_seed == 3
    # The task's reward: one function, or (a method that filters groups) its terms with the filter on accuracy.
    if config.dynamic_sampling == "none":
        assert config.reward_funcs == ["r1_classification"]
    else:
        assert config.reward_funcs == ["classification", "format"] and config.reward_weights == [1.0, 1.0]
        assert config.dynamic_sampling_metric == "classification"
    assert config.output_dir == str(tmp_path)


def test_two_stage_family_uses_one_lab_coefficient_and_vepo_keeps_its_bonus(tmp_path):
    kw = {"model_path": "tiny:qwen2_5_vl", "noise": 0.0, "seed": 0, "output_dir": str(tmp_path)}
    s = rl.RLSettings()
    for method in ("entropy_min", "entropy_max", "min_then_max", "two_stage"):
        c = rl.lab_config(method, s, **kw)
        assert c.entropy_coef_max == c.entropy_coef_min == rl.LAB_ENTROPY_COEF
    assert rl.lab_config("vepo", s, **kw).entropy_coef_max == pytest.approx(1e-3)
    assert rl.lab_config("grpo", s, **kw).entropy_schedule == "none"


def test_train_command_round_trips_through_the_train_parser(tmp_path):
    import shlex

    from visent.trainer.cli import parse_config

    s = rl.RLSettings(steps=5)
    kw = {"model_path": "tiny:qwen2_5_vl", "noise": 0.5, "seed": 1, "output_dir": str(tmp_path)}
    argv = shlex.split(rl.train_command("two_stage", s, **kw))
    assert argv[:2] == ["visent", "train"]
    assert parse_config(argv[2:]) == rl.lab_config("two_stage", s, **kw)


def test_eval_steps_are_spread_and_end_at_the_last_step():
    assert rl.RLSettings(steps=30, eval_points=3).eval_steps() == [10, 20, 30]
    assert rl.RLSettings(steps=2, eval_points=5).eval_steps() == [1, 2]
    with pytest.raises(ValueError, match="num_generations"):
        rl.RLSettings(num_generations=1)


def test_unknown_method_and_bad_arguments_fail_clearly(capsys):
    with pytest.raises(ValueError, match="valid: grpo"):
        rl.method_config_path("vepoo")
    assert demo_main(["--steps", "0", "--out", "unused"]) == 2
    assert demo_main(["--task", "nope", "--out", "unused"]) == 2
    assert "valid: counting" in capsys.readouterr().err


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_paired_interval_matches_a_hand_computation():
    from visent.lab.demo_report import paired_interval

    a = [1, 1, 0, 1, 0, 1, 1, 0]
    b = [0, 1, 0, 0, 0, 1, 0, 1]
    d = [100.0 * (x - y) for x, y in zip(a, b)]  # +100 ×3, −100 ×1, 0 ×4
    m = sum(d) / 8
    sd = (sum((x - m) ** 2 for x in d) / 7) ** 0.5
    got = paired_interval(a, b)
    t7 = 2.364624251592785  # t(0.975, 7): Student t, not the normal 1.96 (n = 8 examples)
    assert got == pytest.approx((m, m - t7 * sd / 8**0.5, m + t7 * sd / 8**0.5))
    with pytest.raises(ValueError, match="equal-length"):
        paired_interval([1], [1, 0])


def test_quick_demo_writes_the_three_artefacts_from_its_own_numbers(tmp_path):
    out = tmp_path / "demo"
    # A study summary in the format `visent study` writes: the report must quote it beside the run.
    study_file = tmp_path / "study.json"
    pair = {"mean": 7.25, "se": 1.5, "n": 6, "wins": 6, "ties": 0, "losses": 0}
    # The study ran the same RL settings as this --quick run (otherwise it would not be quoted at all).
    from dataclasses import asdict

    from visent.lab.demo import _parser, _settings

    quick_rl = asdict(_settings(_parser().parse_args(["--quick"]))[1])
    study_file.write_text(
        json.dumps({"task": "tally", "command": "visent study --task tally", "seeds": 6,
                    "rl_settings": quick_rl, "pairs": {"grpo|warm-start|0": pair}})
    )
    assert demo_main(["--quick", "--out", str(out), "--no-progress", "--study", str(study_file)]) == 0
    for name in ("report.md", "curves.png", "tokens.html", "demo.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    summary = json.loads((out / "demo.json").read_text())
    assert list(summary["results"]) == [label for label, _, _ in DEMO_RUNS]
    for label, method, noise in DEMO_RUNS:
        res = json.loads((out / "rl" / label / "result.json").read_text())
        assert res["method"] == method and res["noise"] == noise
        # The report's row carries exactly the run's measured accuracies and command.
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        assert _pct(res["after"]["accuracy"]) in row and _pct(res["before"]["accuracy"]) in row
        assert res["command"] in report
        # Held-out accuracy was logged at step 0 (the warm-start) and at the last step.
        steps = [
            json.loads(x)["step"] for x in (out / "rl" / label / "heldout.jsonl").read_text().splitlines()
        ]
        assert steps[0] == 0 and steps[-1] == res["steps"]
        # The trainer really ran: one metrics row per step.
        metrics = (out / "rl" / label / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == res["steps"]
    # The report opens with the verdict; GRPO's gain carries the study's numbers and this run's interval.
    assert report.index("## Verdict") < report.index("## Run")
    verdict = next(line for line in report.splitlines() if "Does RL (GRPO) improve" in line)
    # An old-style summary (no interval stored): ±2 SE. The --quick warm-start has no band, so the run is
    # quoted beside the study but flagged, never compared with it.
    assert "+7.2 ± 1.5 points (95% interval [+4.2, +10.2]; 6 of 6 seeds better)" in verdict
    assert "paired 95% interval" in verdict and "**Not compared with the study:**" in verdict
    assert "**This run is not compared with the study:**" in report and "not stopped on measured accuracy" in report
    grpo_row = next(line for line in report.splitlines() if line.startswith("| grpo_clean |"))
    assert "+7.2 ± 1.5 (6 seeds)" in grpo_row
    total = summary["timings_s"]["total"]
    assert re.search(rf"Total wall time: \*\*{total:.0f} s\*\*", report)
    html = (out / "tokens.html").read_text()
    assert "vepo score" in html and "data:image/png;base64" in html
    assert "Token roles from the task generator" in html or "k-anchor" not in html

    # A second demo in the same folder reuses the cached warm-start; with other RL settings (1 step) than
    # the study's, the study is not quoted and the verdict is this run's own.
    assert demo_main(["--quick", "--out", str(out), "--no-progress", "--steps", "1", "--study", str(study_file)]) == 0
    again = json.loads((out / "demo.json").read_text())
    report = (out / "report.md").read_text()
    assert "**No study is quoted:** the study ran RL with other settings (steps 2 vs 1)" in report
    verdict = next(line for line in report.splitlines() if "Does RL (GRPO) improve" in line)
    assert "in this run**" in verdict and "+7.2" not in verdict
    assert again["warmstart"]["cached"] is True
    assert all(r["steps"] == 1 for r in again["results"].values())


def _ws_info(reached=True, acc=0.45, band=(0.4, 0.6)):
    return {"band": {"band": list(band), "reached": reached, "accuracy": acc, "step": 150, "reason": "in band"}}


def test_comparability_refuses_a_start_outside_the_band_or_a_different_study():
    from visent.lab.demo_report import comparability

    study = {"band": [0.4, 0.6], "warmstart_accuracy": 0.45,
             "warmstart_recipe": {"tower_first": None, "phase_two": "language_model", "min_class_accuracy": None}}
    assert comparability(_ws_info(), {"accuracy": 0.45, "n": 128}, study) is None
    assert "did not land" in comparability(_ws_info(reached=False, acc=0.95), {"accuracy": 0.95}, study)
    # The evaluation set is another sample: 35% of 128 is within sampling noise of 40%, 25% is not.
    assert comparability(_ws_info(), {"accuracy": 0.35, "n": 128}, study) is None
    assert "outside the band" in comparability(_ws_info(), {"accuracy": 0.25, "n": 128}, study)
    assert "outside the band" in comparability(_ws_info(), {"accuracy": 0.75, "n": 128}, study)
    assert "predates the band" in comparability(_ws_info(), {"accuracy": 0.45}, {"warmstart_accuracy": 0.5})
    assert "30–50%" in comparability(_ws_info(band=(0.3, 0.5)), {"accuracy": 0.45}, study)
    assert "no band" in comparability({"probe_exact": 0.3}, {"accuracy": 0.45}, study)


def test_verdict_says_whether_the_run_agrees_with_the_study_and_why_not():
    from visent.lab.verdict import verdict_sentence as _verdict

    pair = {"mean": 8.0, "se": 1.5, "n": 12, "n_warm": 3, "wins": 11, "ci95": [1.5, 14.5], "predict95": [-4.0, 20.0]}
    agree = _verdict("grpo", None, 0.0, (9.0, 2.0, 16.0), pair)
    assert "**Yes** — over 3 warm-starts × RL seeds (12 runs)" in agree and "agrees with the study" in agree
    # Interval includes zero, but +1 is a plausible single run: a different verdict, explained by the spread.
    within = _verdict("grpo", None, 0.0, (1.0, -6.0, 8.0), pair)
    assert "differs from the study's" in within and "[-4.0, +20.0]" in within
    # −12 is outside what the study expects for one run: a disagreement, said so.
    outside = _verdict("grpo", None, 0.0, (-12.0, -19.0, -5.0), pair)
    assert "**This run disagrees with the study:**" in outside
    flagged = _verdict("grpo", None, 0.0, (-12.0, -19.0, -5.0), pair, "its warm-start is at 95%.")
    assert "**Not compared with the study:** its warm-start is at 95%." in flagged and "disagrees" not in flagged


def test_the_report_names_both_phases_of_a_two_phase_warm_start():
    from visent.lab.demo_report import _sft_steps

    one = {"steps": 175, "config": {"phase_two": "language_model"}}
    assert _sft_steps(one) == "175 steps"
    two = {
        "steps": 10, "config": {"phase_two": "projector"},
        "tower_phase": {"target": 0.9, "reached": True, "accuracy": 0.921875, "steps": 200},
    }
    text = _sft_steps(two)
    assert "200 steps of the whole model" in text and "92.2%" in text and "10 steps with the vision→text projector" in text

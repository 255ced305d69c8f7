"""VisentConfig validation and `visent train` argument parsing (no model is built here)."""

from __future__ import annotations

import glob
import os

import pytest

from visent.configs import CONFIG_DIR
from visent.trainer.cli import main, parse_config
from visent.trainer.config import VisentConfig

CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))


def make(**kw):
    kw.setdefault("output_dir", "/tmp/visent-test-config")
    kw.setdefault("report_to", "none")
    return VisentConfig(**kw)


def test_defaults_are_vepo_with_no_entropy_term():
    c = make()
    assert (c.token_score, c.selection_ratio, c.selection_granularity, c.selection_mode) == ("vepo", 0.2, "response", "top")
    assert (c.score_alpha, c.perturbation, c.perturbation_seed) == (0.7, "pixel_values_gaussian", 0)
    assert (c.entropy_schedule, c.entropy_switch, c.loss_aggregation) == ("none", 0.8, "selected_mean")
    assert c.skip_uniform_groups is True
    assert c.needs_perturbed_pass and c.needs_clean_stats and c.selects_tokens


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"selection_ratio": 0.0}, "selection_ratio must be in \\(0, 1\\]"),
        ({"selection_ratio": 1.5}, "selection_ratio must be in \\(0, 1\\]"),
        ({"entropy_switch": 1.0}, "entropy_switch must be in \\(0, 1\\)"),
        ({"entropy_switch": 0.0}, "entropy_switch must be in \\(0, 1\\)"),
        ({"entropy_coef_max": -0.1}, "entropy_coef_max must be >= 0"),
        ({"entropy_coef_min": -1e-3}, "entropy_coef_min must be >= 0"),
        ({"score_alpha": 1.2}, "score_alpha must be in \\[0, 1\\]"),
        ({"token_score": "vepoo"}, "token_score='vepoo' is not known; valid: none, vepo, "),
        ({"selection_mode": "middle"}, "valid: top, bottom, random"),
        ({"selection_granularity": "token"}, "valid: response, batch"),
        ({"perturbation": "blur"}, "valid: pixel_values_gaussian, "),
        ({"entropy_schedule": "three_stage"}, "valid: none, max, min, two_stage"),
        ({"loss_aggregation": "sum"}, "valid: selected_mean, token_mean"),
        ({"top_entropy_quantile": 0.2}, "use token_score=entropy"),
        ({"entropy_coef": 0.01}, "use entropy_schedule=max"),
        ({"loss_type": "vespo"}, "unrelated to VEPO"),
        ({"loss_type": "cispo"}, "set epsilon_high >= 1"),
        ({"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": True}}, "Liger"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(kw, message):
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_derived_requirements():
    assert not make(token_score="none").selects_tokens
    assert not make(selection_ratio=1.0).selects_tokens
    c = make(token_score="entropy")
    assert c.needs_clean_stats and not c.needs_perturbed_pass
    c = make(token_score="vepo", selection_mode="random")
    assert c.selects_tokens and not c.needs_clean_stats
    assert not make(token_score="random").needs_clean_stats


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_parses(path, tmp_path):
    c = parse_config(["--config", path, "--output_dir", str(tmp_path)])
    assert isinstance(c, VisentConfig)
    from visent.rewards import REWARDS

    assert c.reward_funcs and all(r in REWARDS for r in c.reward_funcs)


def test_overrides_win_and_types_are_parsed(tmp_path):
    path = os.path.join(CONFIG_DIR, "vepo.yaml")
    c = parse_config(
        ["--config", path, "--selection_ratio", "0.5", "--token_score=entropy", "--reward_funcs", "counting", "format",
         "--epsilon", "0.1", "--skip_uniform_groups", "false", "--output_dir", str(tmp_path)]
    )
    assert c.selection_ratio == 0.5 and c.token_score == "entropy" and c.reward_funcs == ["counting", "format"]
    assert c.epsilon == 0.1 and c.skip_uniform_groups is False


def test_yaml_typo_is_reported_with_file_and_suggestion(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: tiny:qwen2_5_vl\ndataset: lab:counting\nselection_ratoi: 0.3\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "selection_ratoi" in err and "did you mean selection_ratio" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--selection_ratio", "abc"], "selection_ratio"),
        (["--selection_ratio", "0"], "selection_ratio must be in"),
        (["--no_such_option", "1"], "unknown option --no_such_option"),
        (["--entropy_schedule", "two-stage"], "valid: none, max, min, two_stage"),
    ],
)
def test_bad_command_line_exits_2_with_message(argv, message, capsys, tmp_path):
    base = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting", "--output_dir", str(tmp_path)]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_model_or_dataset(capsys, tmp_path):
    assert main(["--dataset", "lab:counting", "--output_dir", str(tmp_path)]) == 2
    assert "model_name_or_path is required" in capsys.readouterr().err
    assert main(["--model_name_or_path", "tiny:qwen2_vl", "--output_dir", str(tmp_path)]) == 2
    assert "dataset is required" in capsys.readouterr().err


def test_unknown_dataset_and_reward_fail_cleanly(capsys, tmp_path):
    base = ["--model_name_or_path", "tiny:qwen2_5_vl", "--output_dir", str(tmp_path)]
    assert main(base + ["--dataset", "lab:countin"]) == 2
    assert "valid: lab:counting" in capsys.readouterr().err
    assert main(base + ["--dataset", "lab:counting", "--reward_funcs", "acuracy"]) == 2
    assert "unknown reward(s) 'acuracy'" in capsys.readouterr().err


def test_missing_config_file(capsys):
    assert main(["--config", "/nonexistent/x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "vepo" in err  # the shipped names are listed


def test_config_takes_a_shipped_name_as_well_as_a_path(tmp_path):
    base = ["--output_dir", str(tmp_path)]
    by_name = parse_config(["--config", "vepo", *base])
    by_path = parse_config(["--config", os.path.join(CONFIG_DIR, "vepo.yaml"), *base])
    assert by_name == by_path and by_name.model_name_or_path is not None


@pytest.mark.parametrize(
    "option", ["max_completion_length", "num_generations", "per_device_train_batch_size", "dataset_size",
               "generation_batch_size", "vllm_max_model_length"],
)
@pytest.mark.parametrize("value", ["0", "-2"])
def test_non_positive_lengths_and_counts_exit_2_in_one_line(option, value, capsys, tmp_path):
    argv = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting", "--output_dir", str(tmp_path),
            f"--{option}", value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"visent train: command line: {option} must be >= 1; got {value}"


def test_missing_dataset_path_fails_cleanly(capsys, tmp_path):
    argv = ["--model_name_or_path", "tiny:qwen2_vl", "--dataset", str(tmp_path / "nope.jsonl"),
            "--output_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err

"""VisentConfig's knobs for the perception-aware baselines and TRL's other loss types: refusals in one line,
and the objective each setting selects."""

from __future__ import annotations

import pytest

from visent.trainer.config import VisentConfig


def make(**kw):
    kw.setdefault("output_dir", "/tmp/visent-test-baselines")
    return VisentConfig(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"selection_weight_lambda": -1.0}, "selection_weight_lambda must be >= 0"),
        ({"selection_mode": "weight", "selection_granularity": "batch"}, "selection_granularity=response"),
        ({"selection_mode": "weight"}, "loss_aggregation=token_mean"),
        ({"entropy_penalty_coef": -0.1}, "entropy_penalty_coef must be >= 0"),
        ({"trajectory_beta_min": 1.5}, "trajectory_beta_min must be in"),
        ({"trajectory_beta_min": 0.9}, "set token_score=perception_kl"),
        ({"perturbation_scope": "response"}, "use perturbation_scope=prompt"),
        ({"perturbation_scope": "image"}, "valid: prompt, response"),
        ({"dynamic_sampling": "dapo"}, "valid: none, easyr1, verl"),
        ({"dynamic_sampling": "easyr1", "dynamic_sampling_bounds": [0.9, 0.1]}, "low < high"),
        ({"dynamic_sampling_max_tries": 0}, "dynamic_sampling_max_tries must be >= 1"),
        ({"dynamic_sampling_on_exhaust": "skip"}, "dynamic_sampling_on_exhaust='skip' is not known"),
        ({"dynamic_sampling_metric": "authors_accuracy", "reward_funcs": ["vepo_math"]}, "must be one of reward_funcs"),
        # EasyR1's bounds are on a [0, 1] accuracy: r1_counting ranges over [0, 2] (every group "too easy").
        ({"dynamic_sampling": "easyr1", "reward_funcs": ["r1_counting"]}, "dynamic_sampling_metric: counting"),
        ({"min_pixels": 0}, "min_pixels must be a positive"),
        ({"min_pixels": 500, "max_pixels": 100}, "must be <= max_pixels"),
        ({"loss_type": "luspo"}, "LUSPO"),
        ({"loss_type": "cispo", "epsilon_high": 5.0, "importance_sampling_level": "sequence"}, "stop-gradient"),
        ({"loss_type": "sapo", "dual_clip": 3.0}, "dual_clip needs the clipped objective"),
        ({"dual_clip": 0.5}, "dual_clip needs"),
        ({"delta": 0.9}, "delta"),
        ({"off_policy_mask_threshold": 0.5}, "off_policy_mask_threshold"),
    ],
)
def test_refused_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as info:
        make(**kw)
    assert "\n" not in str(info.value)


def test_dynamic_sampling_over_several_processes_refused_before_any_model_loads(monkeypatch):
    """Under a launcher (``WORLD_SIZE`` > 1) the config itself refuses it, not the trainer after the model
    loads; one process is accepted."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert make(dynamic_sampling="easyr1").dynamic_sampling == "easyr1"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert make().dynamic_sampling == "none"
    with pytest.raises(ValueError, match="several processes") as info:
        make(dynamic_sampling="easyr1")
    assert "\n" not in str(info.value)


def test_objectives_from_trl_fields():
    assert make().surrogate.kind == "clip"
    s = make(loss_type="cispo", epsilon_high=5.0).surrogate
    assert s.kind == "cispo" and not s.sequence_level
    s = make(loss_type="sapo", importance_sampling_level="sequence").surrogate
    assert s.kind == "sapo" and s.sequence_level
    assert make(dual_clip=3.0, delta=4.0).surrogate.dual_clip == 3.0
    c = make(selection_mode="weight", selection_weight_lambda=0.5, loss_aggregation="token_mean")
    assert c.selection_rule == "top" and c.selects_tokens


def test_easyr1_filter_on_a_unit_range_term_is_accepted_and_the_shipped_configs_filter_on_accuracy():
    """EasyR1 filters on accuracy (BASELINES.md: filter_key = accuracy in VPPO / PAPO). The configs give the
    authors' reward as its two terms with their weights, so the total is unchanged and the filter reads
    the accuracy term alone; filtering on the total would keep an all-wrong, formatted group (mean 0.1)."""
    import yaml

    from visent.configs import CONFIG_DIR
    from visent.rewards import get_reward

    make(dynamic_sampling="easyr1", reward_funcs=["counting", "format"], reward_weights=[1.0, 1.0],
         dynamic_sampling_metric="counting")
    authors = get_reward("vepo_authors_math")
    for name in ("dapo", "vppo", "papo_d"):
        cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert cfg["dynamic_sampling"] == "easyr1" and cfg["dynamic_sampling_metric"] == authors.accuracy_term
        assert list(zip(cfg["reward_funcs"], cfg["reward_weights"])) == authors.terms
    # The terms reproduce the total on varied responses (so splitting the reward changes no advantage).
    for text in ("<think>x</think> \\boxed{6}", "\\boxed{5}", "no answer", "<think>a</think>\\boxed{\\frac{12}{2}}"):
        parts = sum(w * get_reward(t).score_one(text, "6").score for t, w in authors.terms)
        assert parts == pytest.approx(authors.score_one(text, "6").score)


def test_command_line_reward_replaces_the_configs_weights_and_filter_function(capsys):
    """``--config dapo --reward_funcs random``: the file's reward_weights [0.9, 0.1] and filter function
    (authors_accuracy) name the file's two terms; they are dropped with a notice, not refused."""
    from visent.trainer.cli import parse_config

    base = ["--config", "dapo", "--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting",
            "--output_dir", "/tmp/visent-test-dapo"]
    config = parse_config(base + ["--reward_funcs", "random"])
    assert config.reward_funcs == ["random"] and config.reward_weights is None
    assert config.dynamic_sampling_metric is None and config.dynamic_sampling == "easyr1"
    assert "dropped" in capsys.readouterr().err
    # Restated on the command line, they are kept.
    config = parse_config(base + ["--reward_funcs", "counting", "format", "--reward_weights", "1", "1",
                                  "--dynamic_sampling_metric", "counting"])
    assert config.reward_weights == [1.0, 1.0] and config.dynamic_sampling_metric == "counting"
    # Without --reward_funcs the file's own terms stand.
    assert parse_config(base).dynamic_sampling_metric == "authors_accuracy"

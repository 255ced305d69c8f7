"""`RLSettings.freeze_vision_tower` and `run_method`'s extra overrides reach the trainer's config."""

from __future__ import annotations

from visent.lab import rl


def _config(settings, **kw):
    return rl.lab_config(
        "vepo", settings, model_path="tiny:qwen2_5_vl", noise=0.0, seed=0, output_dir="/tmp/x", **kw
    )


def test_freeze_vision_tower_none_keeps_the_config_and_a_bool_overrides_it():
    assert _config(rl.RLSettings(task="tally")).freeze_vision_tower is True  # configs/vepo.yaml
    assert _config(rl.RLSettings(task="tally", freeze_vision_tower=False)).freeze_vision_tower is False


def test_beta_none_keeps_each_config_and_a_value_overrides_every_method():
    def beta(method, settings):
        return rl.lab_config(method, settings, model_path="tiny:qwen2_5_vl", noise=0.0, seed=0, output_dir="/tmp/x").beta

    assert beta("grpo", rl.RLSettings(task="tally")) == 0.0 and beta("papo_g", rl.RLSettings(task="tally")) == 0.01
    assert beta("grpo", rl.RLSettings(task="tally", beta=0.04)) == beta("papo_g", rl.RLSettings(task="tally", beta=0.04)) == 0.04
    assert rl.RLSettings.for_task("tally").beta == rl.TASK_RL_DEFAULTS["tally"]["beta"]


def test_extra_overrides_apply_last_and_show_in_the_command():
    settings = rl.RLSettings(task="tally", learning_rate=1e-4)
    config = _config(settings, extra={"learning_rate": 3e-4, "beta": 0.04})
    assert config.learning_rate == 3e-4 and config.beta == 0.04
    command = rl.train_command(
        "vepo", settings, model_path="m", noise=0.0, seed=0, output_dir="o", extra={"beta": 0.04}
    )
    assert command.endswith("--beta 0.04")


def test_task_defaults_carry_the_tower_setting():
    tally = rl.RLSettings.for_task("tally")
    assert tally.freeze_vision_tower == rl.TASK_RL_DEFAULTS["tally"].get("freeze_vision_tower")


def test_demo_compares_with_a_study_only_under_the_same_rl_settings():
    from dataclasses import asdict

    from visent.lab.demo_report import comparability

    ws_info = {"band": {"band": [0.4, 0.6], "reached": True, "accuracy": 0.5}}
    before = {"accuracy": 0.5, "n": 128}
    mine = asdict(rl.RLSettings.for_task("tally"))
    recipe = {"tower_first": None, "phase_two": "language_model", "min_class_accuracy": None}
    study = {"band": [0.4, 0.6], "rl_settings": dict(mine), "warmstart_recipe": recipe}
    assert comparability(ws_info, before, study, mine) is None
    assert "does not record its RL settings" in comparability(
        ws_info, before, {"band": [0.4, 0.6], "warmstart_recipe": recipe}, mine
    )
    other = {**mine, "steps": mine["steps"] + 1, "freeze_vision_tower": True}
    why = comparability(ws_info, before, {"band": [0.4, 0.6], "rl_settings": other, "warmstart_recipe": recipe}, mine)
    assert "other settings" in why and "steps" in why and "freeze_vision_tower" in why


def test_power_lines_give_the_range_of_detectable_method_differences_per_noise():
    from visent.lab.study_tables import power_lines

    summary = {"pairs": {
        "vepo|grpo|0": {"mdd": 6.1},
        "vepo|entropy_top20|0": {"mdd": 11.7},
        "grpo|warm-start|0": {"mdd": 2.0},  # against the warm-start: not a method-vs-method contrast
        "vepo|grpo|0.5": {"mdd": float("nan")},
    }}
    lines = power_lines(summary, target=20.0)
    assert len(lines) == 1
    assert "noise 0%" in lines[0] and "6.1–11.7 points" in lines[0] and "VEPO − entropy top-20%" in lines[0]
    # Above the target: the design that would reach it, from the worst contrast's own spreads.
    from visent.intervals import smallest_design

    summary["pairs"]["vepo|entropy_top20|0"].update(sd_between=0.0, sd_within=10.36)
    lines = power_lines(summary, target=4.0)
    w, s = smallest_design(0.0, 10.36, 4.0)
    assert len(lines) == 2 and f"{w} warm-starts × {s} RL seeds ({w * s} runs per method)" in lines[1]
    assert "VEPO − entropy top-20%" in lines[1]


def test_demo_compares_with_a_study_only_under_the_same_warm_start_recipe():
    from dataclasses import asdict

    from visent.lab.demo_report import comparability
    from visent.lab.warmstart import warmstart_config

    mine = asdict(rl.RLSettings.for_task("tally"))
    cfg = warmstart_config("tally")
    ws_info = {"band": {"band": list(cfg.band), "reached": True, "accuracy": 0.5}, "config": asdict(cfg)}
    before = {"accuracy": 0.5, "n": 128}
    study = {"band": list(cfg.band), "rl_settings": dict(mine), "warmstart_recipe": cfg.recipe()}
    assert comparability(ws_info, before, study, mine) is None
    assert "predates the two-phase" in comparability(ws_info, before, {**study, "warmstart_recipe": None}, mine)
    other = {**cfg.recipe(), "phase_two": "language_model" if cfg.phase_two != "language_model" else "projector"}
    assert "another recipe" in comparability(ws_info, before, {**study, "warmstart_recipe": other}, mine)


def test_filtering_methods_get_the_task_reward_as_terms_and_filter_on_its_accuracy():
    """The lab's tally reward (r1_counting: counting + format, [0, 2]) under EasyR1's (0.01, 0.99) bounds made
    every group "too easy" and the VPPO / PAPO-D / DAPO runs fail; they get its terms (same total) and filter
    on the counting term; every other method keeps the one function."""
    from visent.lab.rl import LAB_DYNAMIC_SAMPLING_TRIES, METHODS, RLSettings, lab_overrides

    s = RLSettings(task="tally")

    def opts(method):
        tokens = lab_overrides(s, model_path="m", noise=0.0, seed=0, output_dir="o", method=method)
        out, key = {}, None
        for t in tokens:
            if t.startswith("--"):
                key = t[2:]
                out[key] = []
            else:
                out[key].append(t)
        return out

    for method in ("vppo", "papo_d", "dapo"):
        o = opts(method)
        assert o["reward_funcs"] == ["counting", "format"] and o["reward_weights"] == ["1.0", "1.0"]
        assert o["dynamic_sampling_metric"] == ["counting"]
        # A saturated lab model must not stop a filtering run: a bounded budget, then top-up.
        assert o["dynamic_sampling_max_tries"] == [str(LAB_DYNAMIC_SAMPLING_TRIES)]
        assert o["dynamic_sampling_on_exhaust"] == ["top_up"]
    for method in set(METHODS) - {"vppo", "papo_d", "dapo"}:
        o = opts(method)
        assert o["reward_funcs"] == ["r1_counting"], method
        # A config naming a filter metric (DAPO's, with its filter off) gets the one function's name.
        assert o.get("dynamic_sampling_metric", ["r1_counting"]) == ["r1_counting"], method
        assert "dynamic_sampling_on_exhaust" not in o, method


def test_grpo_at_dapos_rollouts_and_a_lab_override_of_the_filter(tmp_path, monkeypatch):
    """grpo_rollout_matched is GRPO with ROLLOUT_SCALE times the prompts a step, each prompt still seen once;
    a lab method that switches its config's filter off gets the one-function reward, not the filter's terms."""
    from visent.lab import rl
    from visent.lab.rl import ROLLOUT_SCALE, RLSettings, lab_config

    s = RLSettings(task="tally")
    base = {"model_path": "m", "noise": 0.0, "seed": 0, "output_dir": str(tmp_path)}
    grpo, matched = lab_config("grpo", s, **base), lab_config("grpo_rollout_matched", s, **base)
    prompts = int(s.prompts_per_step * ROLLOUT_SCALE["grpo_rollout_matched"] + 0.5)
    assert prompts == 20 and matched.per_device_train_batch_size == prompts * s.num_generations
    assert matched.dataset_size == s.steps * prompts and grpo.dataset_size == s.steps * s.prompts_per_step
    assert matched.num_generations == grpo.num_generations and matched.epsilon_high == grpo.epsilon_high

    monkeypatch.setitem(rl.METHODS, "dapo_off", ("dapo", {"dynamic_sampling": "none"}))
    dapo, off = lab_config("dapo", s, **base), lab_config("dapo_off", s, **base)
    assert dapo.dynamic_sampling == "easyr1" and off.dynamic_sampling == "none"
    assert dapo.reward_funcs == ["counting", "format"] and off.reward_funcs == ["r1_counting"]
    assert off.epsilon_high == dapo.epsilon_high and off.loss_aggregation == dapo.loss_aggregation

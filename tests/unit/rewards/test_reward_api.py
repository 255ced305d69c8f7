"""The TRL-facing contract: signature, completion forms, table, stats, ranges, combinators."""

from __future__ import annotations

import inspect

import pytest

from visent.rewards import REWARD_STATS, REWARDS, Reward, RewardResult, completion_text, get_reward, weighted
from visent.rewards.registry import TASK_REWARDS, reward_for_task


def test_completion_forms():
    assert completion_text("plain") == "plain"
    assert (
        completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])
        == "ab"
    )
    parts = [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}, {"type": "image"}, {"type": "text", "text": "y"}],
        }
    ]
    assert completion_text(parts) == "xy"
    assert (
        completion_text([{"role": "user", "content": "ignored"}, {"role": "assistant", "content": "kept"}])
        == "kept"
    )
    assert completion_text(None) == "" and completion_text(42) == ""


def test_trl_call_signature_with_extra_kwargs():
    """TRL calls reward(prompts=, completions=, completion_ids=, **columns, trainer_state=, log_extra=, log_metric=)."""
    logged = []
    math = get_reward("math")
    scores = math(
        prompts=[[{"role": "user", "content": "q"}]] * 3,
        completions=[
            [{"role": "assistant", "content": "\\boxed{4}"}],
            [{"role": "assistant", "content": "\\boxed{5}"}],
            [{"role": "assistant", "content": "four"}],
        ],
        completion_ids=[[1], [2], [3]],
        answer=["4", "4", "4"],
        clean_answer=["4", "4", "4"],
        is_noisy=[False] * 3,
        task=["math"] * 3,
        id=["a", "b", "c"],
        trainer_state=object(),
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: logged.append((name, value)),
    )
    assert scores == [1.0, 0.0, 0.0]
    assert logged == [("rewards/math/parse_fail_rate", pytest.approx(1 / 3))]
    assert math.__name__ == "math"  # TRL names its reward logs after __name__


def test_stats_count_parse_failures_and_reset():
    REWARD_STATS.reset()
    fmt = get_reward("classification")
    fmt(["<answer></answer>", "<answer>pug</answer>", "<answer>?!</answer>"], answer=["pug"] * 3)
    fmt(["<answer>pug</answer>"], answer=[""])  # a label error, not a parse failure
    counts = REWARD_STATS.snapshot()["classification"]
    assert counts == {"calls": 4, "parse_failures": 2, "label_errors": 1, "errors": 0}
    metrics = REWARD_STATS.as_metrics()
    assert metrics["rewards/classification/parse_fail_rate"] == pytest.approx(0.5)
    assert metrics["rewards/classification/label_error_rate"] == pytest.approx(0.25)
    REWARD_STATS.reset()
    assert REWARD_STATS.snapshot() == {}


def test_verifier_exceptions_are_caught_counted_and_scored_low():
    def broken(text, answer, **row):
        raise ZeroDivisionError("boom")

    def out_of_range(text, answer, **row):
        return RewardResult(float("nan") if text == "nan" else 7.0)

    REWARD_STATS.reset()
    reward = Reward("broken_test", broken, low=-1.0, high=1.0)
    assert reward(["x", "y"], answer=["1", "1"]) == [-1.0, -1.0]
    assert REWARD_STATS.snapshot()["broken_test"]["errors"] == 2
    clamped = Reward("clamped_test", out_of_range)
    assert clamped(["big", "nan"]) == [1.0, 0.0]


def test_table_and_lookup():
    assert {
        "math",
        "format",
        "boxed_format",
        "grounding",
        "classification",
        "detection",
        "random",
        "format_only",
        "counting",
        "vepo_math",
    } <= set(REWARDS)
    for name, reward in REWARDS.items():
        assert reward.name == name and reward.low <= reward.high
        assert "completions" in inspect.signature(reward.__call__).parameters
    with pytest.raises(KeyError, match="valid rewards: math"):
        get_reward("nope")
    for task in TASK_REWARDS:
        assert reward_for_task(task).name == TASK_REWARDS[task]
    with pytest.raises(KeyError, match="tasks with one"):
        reward_for_task("other")


def test_weighted_components_range_and_primary_parse_flag():
    combo = weighted({get_reward("math"): 0.9, get_reward("boxed_format"): 0.1}, "combo_test")
    result = combo.score_one("<think>t</think> \\boxed{3}", "3")
    assert result.score == pytest.approx(1.0)
    assert result.components["math"] == 1.0 and result.components["boxed_format"] == 1.0
    assert result.components["math/accuracy"] == 1.0
    assert combo.score_one("no box", "3").parse_failed  # the 0.9 term could not parse
    neg = weighted([(get_reward("format"), -0.5), (get_reward("math"), 1.0)], "neg_test")
    assert (neg.low, neg.high) == (-0.5, 1.0)
    with pytest.raises(ValueError, match="repeated"):
        weighted([(get_reward("math"), 1.0), (get_reward("math"), 1.0)], "dup")


def test_every_reward_pickles_and_scores_the_same_after():
    """Rewards cross process boundaries (dataloader workers, multiprocess eval): no closures inside."""
    import pickle

    texts = ["<think>t</think><answer>[0, 0, 10, 10]</answer>", "<think>t</think> \\boxed{3}"]
    for name, reward in REWARDS.items():
        clone = pickle.loads(pickle.dumps(reward))
        assert clone.name == name
        kwargs = {"answer": ["[0, 0, 10, 10]", "3"], "id": ["a", "b"]}
        assert clone(texts, **kwargs) == reward(texts, **kwargs), name

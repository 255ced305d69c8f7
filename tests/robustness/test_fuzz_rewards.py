"""Fuzzing every reward in ``visent.rewards.REWARDS`` beyond ``tests/unit/rewards/test_reward_properties.py``.

That test feeds one arbitrary completion per call. Here: whole TRL-style batches (mixed completion forms,
TRL's extra keyword arguments, columns of the wrong length, ``meta`` as a dict, a JSON string or junk),
and adversarial *shapes* of text — thousands of nested braces, 5000-digit numbers (past Python's int/str
conversion limit), boxes holding NaN/1e999, very long outputs — that a sampling policy does produce.

Contract: a reward returns one finite float per completion inside its documented ``[low, high]``, never
raises, never counts a verifier ``error`` (an exception its own code did not anticipate), and stays fast.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visent.rewards import REWARD_STATS, REWARDS

PATHOLOGICAL = [
    "\\boxed{" * 3000 + "1" + "}" * 3000,
    "\\boxed{" * 3000,
    "}" * 3000 + "\\boxed{2}",
    "<answer>" + "[" * 3000 + "</answer>",
    "<answer>" + "{" * 3000 + "}" * 3000 + "</answer>",
    "\\boxed{" + "9" * 5000 + "}",
    "<answer>" + "9" * 5000 + "</answer>",
    "<answer>" + "1" * 5000 + "/" + "3" * 5000 + "</answer>",
    "\\boxed{10^{10^{10^{10}}}}",
    "\\boxed{9!!!!!!!!!!}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{0/0}",
    '<answer>[{"bbox_2d": [NaN, 0, 1e999, -1e999], "label": "cat", "score": Infinity}]</answer>',
    '<answer>[{"bbox_2d": [' + "9" * 5000 + ", 0, 1, 1]}]</answer>",
    '<answer>{"bbox_2d": [1, 2, 3]}</answer>',
    '<answer>[{"bbox_2d": "1,2,3,4"}, null, 5, "x", [1, 2, 3, 4]]</answer>',
    "<answer>(" + "1" * 400 + ", " + "2" * 400 + ")</answer>",
    "<answer>(1e308, 1e308)</answer>",
    "<answer>(-0.0, nan)</answer>",
    "<think>" + "a\n" * 20000 + "</think><answer>7</answer>",
    "<think></think><answer></answer>" * 500,
    "\x00\ud7ff\ufffd" * 1000,
    "😀" * 5000,
    "",
]
LABELS = [
    "0.5",
    "C",
    "7",
    "145°",
    "beagle",
    "[10, 10, 50, 50]",
    '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]',
    '[{"label": "cat", "bbox": [0, 0, 10, 10]}]',
    "9" * 5000,
    "[" * 3000,
    "",
    None,
    "[NaN, 0, 1, 1]",
]
META = [
    None,
    {"image_size": [1920, 1080], "coord_space": "pixels"},
    '{"image_size": [0, 0], "choices": ["a", "b"]}',
    "{not json",
    "[" * 3000,
    {"image_size": [10**400, 5], "resized_size": [1, 1]},
    7,
]

completion_forms = st.sampled_from(PATHOLOGICAL).flatmap(
    lambda t: st.sampled_from(
        [
            t,
            [{"role": "assistant", "content": t}],
            [{"role": "assistant", "content": [{"type": "text", "text": t}, {"type": "image"}]}],
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": t}],
        ]
    )
)


def _failing_log_metric(name, value):
    raise RuntimeError("a broken logger must not break scoring")


def check_batch(name, reward, scores, n):
    assert isinstance(scores, list) and len(scores) == n, name
    for s in scores:
        assert isinstance(s, float) and math.isfinite(s), (name, s)
        assert reward.low <= s <= reward.high, (name, s)


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_text_against_every_reward_and_label(text):
    REWARD_STATS.reset()
    for name, reward in REWARDS.items():
        start = time.perf_counter()
        completions = [text] * len(LABELS)
        scores = reward(completions, answer=LABELS, meta=[META[i % len(META)] for i in range(len(LABELS))])
        check_batch(name, reward, scores, len(LABELS))
        # A verifier must not hang on adversarial output: this budget is generous for 13 rows on a busy CPU.
        assert time.perf_counter() - start < 20.0, (name, "too slow")
    errors = {n: c["errors"] for n, c in REWARD_STATS.snapshot().items() if c["errors"]}
    assert not errors, errors


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    completions=st.lists(completion_forms, min_size=1, max_size=4),
    answers=st.lists(st.sampled_from(LABELS), min_size=0, max_size=5),
    meta=st.sampled_from(META),
    seed=st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=3)),
)
def test_trl_batches_with_odd_columns(completions, answers, meta, seed):
    """Columns as TRL passes them (plus its non-row keyword arguments), of the right or the wrong length."""
    REWARD_STATS.reset()
    n = len(completions)
    for name, reward in REWARDS.items():
        scores = reward(
            completions,
            answer=answers,  # possibly shorter or longer than the batch: broadcast/ignored, never an IndexError
            meta=[meta] * n,
            image_size=[[1920, 1080]] * n,
            seed=seed,
            prompts=[[{"role": "user", "content": "q"}]] * n,
            completion_ids=[[1, 2, 3]] * n,
            trainer_state=None,
            log_metric=_failing_log_metric,
            log_extra=None,
        )
        check_batch(name, reward, scores, n)
    errors = {n: c["errors"] for n, c in REWARD_STATS.snapshot().items() if c["errors"]}
    assert not errors, errors


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    completions=st.lists(
        st.one_of(completion_forms, st.text(max_size=300), st.lists(st.sampled_from(PATHOLOGICAL), max_size=3).map("".join)),
        min_size=1,
        max_size=6,
    ),
    answer=st.one_of(st.sampled_from(LABELS), st.text(max_size=50)),
    meta=st.sampled_from(META),
)
def test_rewards_long_fuzz(completions, answer, meta):
    REWARD_STATS.reset()
    n = len(completions)
    for name, reward in REWARDS.items():
        check_batch(name, reward, reward(completions, answer=[answer] * n, meta=[meta] * n), n)
    errors = {n: c["errors"] for n, c in REWARD_STATS.snapshot().items() if c["errors"]}
    assert not errors, errors


@pytest.mark.parametrize("column", ["text", "seed", "p", "model_space", "confidence_weight", "answer_text"])
def test_dataset_columns_named_like_verifier_parameters_change_nothing(column):
    # TRL passes every dataset column as a keyword; a column called `text` once collided with the
    # verifier's own `text` parameter and scored every completion 0 ("got multiple values").
    REWARD_STATS.reset()
    completions = ["<think>ok</think><answer>7</answer>", "\\boxed{0.5}", "<answer>(15, 15)</answer>"]
    for name, reward in REWARDS.items():
        plain = reward(completions, answer=["7", "0.5", "[10, 10, 50, 50]"], id=["a", "b", "c"])
        clashing = reward(
            completions, answer=["7", "0.5", "[10, 10, 50, 50]"], id=["a", "b", "c"], **{column: ["x", "y", "z"]}
        )
        assert clashing == plain, (name, column)
    errors = {n: c["errors"] for n, c in REWARD_STATS.snapshot().items() if c["errors"]}
    assert not errors, errors

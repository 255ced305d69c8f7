"""Property test: no reward raises on arbitrary model text or returns a value outside its range."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visent.rewards import REWARD_STATS, REWARDS

# Fragments that exercise every parser: tags, boxes with nested/unbalanced braces, JSON pieces,
# coordinates, huge and non-finite numbers, LaTeX that sympy finds expensive.
FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "\\fbox{",
    "{",
    "}",
    "\\{",
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    '"',
    '{"bbox_2d": [',
    '"label": "cat"',
    '"score": ',
    "point_2d",
    "NaN",
    "Infinity",
    "-1e999",
    "1e308",
    "9" * 300,
    "0.5",
    "-3",
    "\\frac{",
    "^{",
    "9^{9^{9}}",
    "!",
    "\\sqrt{",
    "x=",
    "A",
    "(C)",
    "°",
    "%",
    "<|box_start|>",
    "<|box_end|>",
    "```json",
    "\n",
    " ",
    "é",
    "中文",
    "\x00",
    "\ud7ff",
    "null",
    "true",
]

texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map("".join),
)
completions = st.one_of(
    texts,
    texts.map(lambda t: [{"role": "assistant", "content": t}]),
    texts.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]),
    st.sampled_from([None, 3, [], [None], [{"content": None}], {"role": "assistant"}]),
)
# Valid labels per reward family, plus arbitrary text as a (bad) label.
labels = st.one_of(
    st.sampled_from(
        [
            "0.5",
            "C",
            "145°",
            "7",
            "great_pyrenees",
            "[10, 10, 50, 50]",
            '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]',
            "[]",
        ]
    ),
    texts,
)
rows = st.fixed_dictionaries(
    {},
    optional={
        "coord_space": st.sampled_from(["pixels", "resized_pixels", "grid1000", "unit", "bogus"]),
        "model_coord_space": st.sampled_from(["pixels", "resized_pixels", "grid1000", "unit", "bogus"]),
        "image_size": st.sampled_from([[1920, 1080], [0, 5], "800x600", "junk", None, [1, 1000]]),
        "choices": st.sampled_from([["135°", "140°", "145°"], '["a", "b"]', "not json", [], None]),
        "id": st.text(max_size=5),
    },
)


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(completion=completions, answer=labels, row=rows)
def test_every_reward_is_total_and_in_range(completion, answer, row):
    REWARD_STATS.reset()
    for name, reward in REWARDS.items():
        columns = {key: [value] for key, value in row.items()}
        scores = reward([completion], answer=[answer], **columns)
        assert len(scores) == 1, name
        score = scores[0]
        assert isinstance(score, float) and math.isfinite(score), (name, score)
        assert reward.low <= score <= reward.high, (name, score)
        result = reward.score_one(completion, answer, **row)
        assert all(isinstance(v, float) and math.isfinite(v) for v in result.components.values()), name
    # The Reward wrapper would have caught an exception; a verifier bug still shows up as an "error".
    errors = {n: c["errors"] for n, c in REWARD_STATS.snapshot().items() if c["errors"]}
    assert not errors, errors

"""Classification matching, format rewards, spurious baselines."""

from __future__ import annotations

import pytest

from visent.rewards import get_reward
from visent.rewards.format import is_think_answer, is_think_boxed

classification = get_reward("classification")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>Great_Pyrenees</answer>", 1.0),
        ("<answer>great pyrenees.</answer>", 1.0),
        ("<answer>GREAT-PYRENEES</answer>", 1.0),
        ("<answer>This is a great pyrenees dog</answer>", 1.0),  # containment
        ("<answer>pyrenees</answer>", 0.0),  # only part of the class name
        ("<answer>great pyreneesx</answer>", 0.0),  # containment is by whole words
        ("<answer>samoyed</answer>", 0.0),
    ],
)
def test_classification_normalised_match_and_containment(text, expected):
    assert classification.score_one(text, "great_pyrenees").score == expected


def test_listing_several_classes_gets_no_containment_credit():
    classes = ["great_pyrenees", "samoyed", "pug"]
    assert (
        classification.score_one(
            "<answer>great pyrenees or samoyed</answer>", "great_pyrenees", classes=classes
        ).score
        == 0.0
    )
    assert (
        classification.score_one("<answer>a great pyrenees</answer>", "great_pyrenees", classes=classes).score
        == 1.0
    )
    # without the class list the (weaker) containment rule applies
    assert (
        classification.score_one("<answer>great pyrenees or samoyed</answer>", "great_pyrenees").score == 1.0
    )


def test_classification_empty_answer_is_parse_failure():
    assert classification.score_one("<answer> ... </answer>", "pug").parse_failed
    assert classification.score_one("<answer>pug</answer>", "").label_error


def test_think_answer_format():
    assert is_think_answer("<think>line 1\nline 2</think>\n<answer>5</answer>\n")
    assert not is_think_answer("<think>a</think><answer>5</answer> trailing words")
    assert not is_think_answer("preamble <think>a</think><answer>5</answer>")
    assert not is_think_answer("<think>a</think><think>b</think><answer>5</answer>")
    assert not is_think_answer("<answer>5</answer><think>a</think>")
    assert not is_think_answer("<think>a</think>")


def test_think_boxed_format():
    assert is_think_boxed("<think>x\ny</think> The answer is \\boxed{\\frac{1}{2}}.")
    assert not is_think_boxed("<think>x</think> The answer is \\boxed{\\frac{1}{2}")  # unbalanced
    assert not is_think_boxed("\\boxed{3} <think>x</think>")
    assert not is_think_boxed("<think>x \\boxed{3}</think> so 3")  # the box must follow the thinking


def test_vepo_math_weights():
    vepo = get_reward("vepo_math")
    assert vepo.score_one("<think>a</think> \\boxed{2}", "2").score == pytest.approx(1.0)
    assert vepo.score_one("<think>a</think> \\boxed{3}", "2").score == pytest.approx(0.1)
    assert vepo.score_one("\\boxed{2}", "2").score == pytest.approx(0.9)
    r1 = get_reward("r1_math")
    assert (r1.low, r1.high) == (0.0, 2.0)
    assert r1.score_one("<think>a</think><answer>2</answer>", "2").score == 2.0


def test_random_reward_is_seeded_and_roughly_fair():
    rnd = get_reward("random")
    texts = [f"completion {i}" for i in range(400)]
    first = rnd(texts, answer=["1"] * 400, id=[str(i) for i in range(400)])
    again = rnd(texts, answer=["1"] * 400, id=[str(i) for i in range(400)])
    assert first == again
    assert set(first) == {0.0, 1.0}
    assert 150 < sum(first) < 250  # Bernoulli(0.5), 400 draws: 5 sigma is 50

    class State:
        global_step = 7

    later = rnd(texts, answer=["1"] * 400, id=[str(i) for i in range(400)], trainer_state=State())
    assert later != first  # a new step draws afresh


def test_format_only_ignores_correctness():
    fo = get_reward("format_only")
    assert fo.score_one("<think>a</think><answer>wrong</answer>", "right").score == 1.0
    assert fo.score_one("<think>a</think> \\boxed{wrong}", "right").score == 1.0
    assert fo.score_one("right", "right").score == 0.0

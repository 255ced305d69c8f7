"""vepo_authors_math: the VEPO/EasyR1 authors' reward, ``0.9·grade_answer(extract_boxed_content(r), label) +
0.1·fullmatch(<think>.*</think>.*\\boxed{.*}.*)`` (``Leonnnnnn929/VEPO`` @ 42473082dd59815ea636e7bb627f63f2772ca891,
``verl/utils/reward_score/math.py``; ``mathruler`` 0.1.0 ``grader.py``).

The committed cases (``tests/fixtures/authors_math_cases.jsonl``) hold response variants built from MMK12,
MathVista and MathVision labels of ``../shared/data`` with the score the authors' own code gave them.
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pylatexenc")

sys.path.insert(0, str(Path(__file__).parent))
from authors_variants import load_cases, variants

from visent.rewards import get_reward
from visent.rewards.authors_math import authors_format_ok
from visent.rewards.prm800k_grader import extract_last_boxed, grade

REWARD = get_reward("vepo_authors_math")
_AUTHORS_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)


def test_hand_computed():
    think = "<think>look</think> "
    assert REWARD.score_one(think + "\\boxed{6}", "6").score == pytest.approx(1.0)
    # the authors' grader wants an integer written as one: only the format point
    assert REWARD.score_one(think + "\\boxed{\\frac{12}{2}}", "6").score == pytest.approx(0.1)
    assert get_reward("vepo_math").score_one(think + "\\boxed{\\frac{12}{2}}", "6").score == pytest.approx(1.0)
    assert REWARD.score_one(think + "\\boxed{0.5}", "\\frac{1}{2}").score == pytest.approx(1.0)
    assert REWARD.score_one(think + "\\boxed{2/4}", "1/2").score == pytest.approx(0.1)  # unreduced fraction
    assert REWARD.score_one("\\boxed{6}", "6").score == pytest.approx(0.9)  # no thinking: no format point
    assert REWARD.score_one(think + "\\boxed{25}", "25°.").score == pytest.approx(0.1)  # label's trailing '.'
    assert extract_last_boxed("\\boxed{1} \\boxed{2") == "None"


def test_committed_cases_match_the_authors_code():
    cases = load_cases()
    assert len(cases) >= 500
    wrong = [c for c in cases if abs(REWARD.score_one(c["response"], c["label"]).score - c["score"]) > 1e-9]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, e.g. {wrong[:3]}"


def test_live_against_mathruler():
    grader = pytest.importorskip("mathruler.grader")
    labels = sorted({c["label"] for c in load_cases()})
    extra = ["(1, 2)", "[3,4)", "1,000", "\\sqrt{2}/2", "3 \\text{ cm}", "x^2+1", "7 3/4", "-.5", "\\infty", "50\\%"]
    for label in labels + extra:
        for resp in variants(label):
            theirs = 0.9 * float(grader.grade_answer(grader.extract_boxed_content(resp), label)) + 0.1 * float(
                _AUTHORS_FORMAT.fullmatch(resp) is not None
            )
            assert REWARD.score_one(resp, label).score == pytest.approx(theirs, abs=1e-9), (resp, label)


def test_format_check_equals_the_regex_on_random_text():
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "\\boxed{", "}", "{", "x", "\n", " ", "<think", "boxed{"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert authors_format_ok(text) == (_AUTHORS_FORMAT.fullmatch(text) is not None), text


@pytest.mark.parametrize(
    "response",
    [
        "<think>" + "</think>" * 5000 + "\\boxed{" * 5000,
        "\\boxed{9^{9^{9^{9}}}}",
        "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}",
        "\\boxed{\\frac{\\frac{\\frac{1}{}}{}}{\\sqrt}}",
        "\\boxed{\x00\udcff\\text{ a}\\text{ b}}",
        "\\boxed{__import__('os')}",
        "\\boxed{" + "x" * 100_000 + "}",
    ],
)
def test_never_raises_and_stays_bounded(response):
    start = time.perf_counter()
    result = REWARD.score_one(response, "6")
    assert 0.0 <= result.score <= 1.0
    assert time.perf_counter() - start < 10.0
    assert grade(extract_last_boxed(response), "x^2") in (True, False)

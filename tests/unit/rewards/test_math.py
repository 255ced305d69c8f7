"""Math / multiple-choice / counting accuracy, answer extraction, and the symbolic guard."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from visent.rewards import get_reward
from visent.rewards.extract import boxed_spans, final_answer, last_boxed
from visent.rewards.math import normalize, option_letter, parse_count
from visent.rewards.symbolic import run_with_deadline, symbolic_equal, too_costly

math_reward = get_reward("math")


def acc(text: str, answer: str, **row) -> float:
    return math_reward.score_one(text, answer, **row).score


# --- extraction ---------------------------------------------------------------------------------


def test_last_boxed_handles_nested_and_escaped_braces():
    text = r"first \boxed{1} then \boxed{\frac{a^{2}}{b}} and \boxed{\{x\}}"
    assert [s[2] for s in boxed_spans(text)] == ["1", r"\frac{a^{2}}{b}", r"\{x\}"]
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # truncated generation: unclosed box
    assert last_boxed(r"\boxed{2} then \boxed{3") == "2"


def test_final_answer_prefers_whatever_comes_last_and_box_inside_tag():
    assert final_answer(r"<think>maybe \boxed{3}</think><answer>5</answer>") == "5"
    assert final_answer(r"<answer>5</answer> wait, actually \boxed{6}") == "6"
    assert final_answer(r"<answer>so \boxed{7}.</answer>") == "7"
    assert final_answer("<answer>\n 12 \n</answer>") == "12"
    assert final_answer("The answer is 5") is None


# --- equivalences ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (r"\frac{1}{2}", "0.5"),  # fraction vs decimal
        (r"\dfrac12", "1/2"),  # LaTeX shorthand
        ("0.50", r"\frac{1}{2}"),  # trailing zero
        (r"50\%", "0.5"),  # percentage
        ("3.0", "3"),
        ("1,000", "1000"),  # thousands separator
        (r"1000\text{ g}", "1000"),  # unit in \text
        ("6 cm", "6"),  # bare unit
        (r"145^\circ", "145°"),  # degrees, two spellings
        (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
        (r"2\sin(2x-\pi/6)", r"$2\sin (2x-\frac{\pi }{6})$"),  # MMK12 label style (with $...$)
        ("x = 3", "3"),
        (r"\text{Yes}", "yes"),  # string fallback, case
    ],
)
def test_equivalent_answers_score_one(pred, gold):
    assert acc(rf"<think>work</think> \boxed{{{pred}}}", gold) == 1.0
    assert acc(f"<answer>{pred}</answer>", gold) == 1.0


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("12", "1.2"),
        (r"\frac{1}{3}", "0.5"),
        ("3.14159", r"\pi"),
        ("-3", "3"),
        ("no", "yes"),
        ("146", "145°"),
    ],
)
def test_different_answers_score_zero(pred, gold):
    assert acc(rf"\boxed{{{pred}}}", gold) == 0.0


def test_missing_answer_is_a_counted_parse_failure():
    result = math_reward.score_one("I think it's 5", "5")
    assert result.score == 0.0 and result.parse_failed
    assert result.components["accuracy"] == 0.0


# --- multiple choice ------------------------------------------------------------------------------

CHOICES = ["135°", "140°", "145°", "150°"]  # MathVista pid 3: answer is the option text


@pytest.mark.parametrize(
    ("pred", "expected"),
    [("C", 1.0), ("(C)", 1.0), ("C. 145°", 1.0), ("145°", 1.0), ("145", 1.0), ("B", 0.0), ("140°", 0.0)],
)
def test_choices_by_letter_or_option_text(pred, expected):
    assert acc(f"<answer>{pred}</answer>", "145°", choices=CHOICES) == expected
    # the same with a letter label (Geometry3K raw / MathVision style) and choices as JSON text
    assert acc(f"<answer>{pred}</answer>", "C", choices='["135°", "140°", "145°", "150°"]') == expected


def test_letter_label_without_choices():
    assert acc(r"\boxed{D}", "D") == 1.0
    assert acc(r"\boxed{\text{(D)}}", "D") == 1.0
    assert acc(r"\boxed{Answer: d}", "D") == 1.0
    assert acc(r"\boxed{E}", "D") == 0.0


def test_choices_read_from_meta_column():
    assert acc("<answer>A</answer>", "135°", meta={"choices": CHOICES}) == 1.0
    assert acc("<answer>A</answer>", "135°", meta='{"choices": ["135°", "140°"]}') == 1.0


def test_option_letter_and_normalize_helpers():
    assert option_letter("(b)") == "B" and option_letter("B: 140") == "B"
    assert option_letter("a + b") is None and option_letter("Area is 5") is None
    assert normalize(r"$\text{ 145}^{\circ}$.") == "145"
    assert normalize(r"\left( 1, 2 \right)") == "(1,2)"


# --- counting -------------------------------------------------------------------------------------


def test_counting_is_exact_integer():
    counting = get_reward("counting")
    assert counting.score_one("<answer>7</answer>", "7").score == 1.0
    assert counting.score_one("<answer> seven </answer>", 7).score == 1.0
    assert counting.score_one(r"\boxed{7.0}", "7").score == 1.0
    assert counting.score_one(r"\boxed{14/2}", "7").score == 0.0  # no symbolic credit for counts
    assert counting.score_one("<answer>8</answer>", "7").score == 0.0
    assert counting.score_one("7", "7").parse_failed
    assert parse_count("1,000") == 1000 and parse_count("seven apples") is None
    bad_label = counting.score_one("<answer>7</answer>", "many")
    assert bad_label.label_error and bad_label.score == 0.0


# --- the guard against slow or hanging symbolic comparisons ----------------------------------------


@pytest.mark.parametrize("evil", [r"9^{9^{9^{9}}}", r"2^{2^{30}}", r"10^{100000}", "100000!", "9" * 5000])
def test_adversarial_answers_return_fast(evil):
    start = time.monotonic()
    assert acc(rf"\boxed{{{evil}}}", "3") == 0.0
    assert time.monotonic() - start < 3.0
    assert too_costly(evil)


def test_deadline_aborts_slow_work_and_restores_handler():
    sentinel = []
    previous = signal.signal(signal.SIGALRM, lambda *a: sentinel.append(1))
    try:
        start = time.monotonic()
        assert run_with_deadline(lambda: time.sleep(5) or "done", 0.2, "late") == "late"
        assert time.monotonic() - start < 2.0
        assert run_with_deadline(lambda: "done", 0.5, "late") == "done"
        assert signal.getsignal(signal.SIGALRM) is not None and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        handler = signal.getsignal(signal.SIGALRM)
        assert callable(handler) and handler.__name__ == "<lambda>"
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_symbolic_works_off_the_main_thread():
    out = {}

    def work():
        out["eq"] = symbolic_equal("0.5", r"\frac{1}{2}")
        out["evil"] = symbolic_equal("3", r"9^{9^{9^{9}}}")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert out == {"eq": True, "evil": False}


def test_mathvista_precision_rounds_the_prediction():
    # MathVista pid 1: answer "1.2", precision 1 -> 1.23 rounds to 1.2 (right), 1.26 to 1.3 (wrong)
    assert acc("<answer>1.23</answer>", "1.2", meta={"precision": 1.0}) == 1.0
    assert acc("<answer>1.26</answer>", "1.2", meta={"precision": 1.0}) == 0.0
    assert acc("<answer>1.23</answer>", "1.2") == 0.0  # no precision given: exact value needed
    assert acc("<answer>about 1.23</answer>", "1.2", precision=2) == 0.0

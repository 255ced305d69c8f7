"""Contract between the data loaders and the verifiers, on the real rows copied into tests/fixtures/data.

Every label a loader produces must verify against itself (written the way a model would answer), and a
clearly wrong answer must score 0 — otherwise training rewards or evaluation would be silently off for
that dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from visent.data.loaders import load_examples
from visent.rewards import reward_for_task
from visent.rewards.geometry import box_center, parse_label_box

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
SOURCES = [
    "mathvista/data/testmini.json",
    "mathvision/data/testmini.jsonl",
    "mmk12/k12.json",
    "screenspot_v2/screenspot_web_v2.json",
    "geometry3k/derived/geometry3k_hiyouga_format.jsonl",
    "geometry3k/intergps_data_examples",
    "r1v/superclevr_test200_counting_problems.jsonl",
    "r1v/geoqa_test_prompts.jsonl",
    "visual_rft/derived/pets_val_decoded.jsonl",
    "seeclick/screenspot_synthetic.json",
    "lmm_r1/test_message.jsonl",
]


def _answers(example) -> tuple[list[str], str]:
    """(completions that must score 1, one that must score 0) for an example."""
    if example.task == "grounding":
        x1, y1, x2, y2 = parse_label_box(example.answer)
        x, y = box_center((x1, y1, x2, y2))
        return [f"<answer>({x}, {y})</answer>", f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}'], (
            f"<answer>({x2 + 50}, {y2 + 50})</answer>"
        )
    right = [
        f"<think>t</think><answer>{example.answer}</answer>",
        f"<think>t</think> \\boxed{{{example.answer}}}",
    ]
    if example.meta.get("answer_text"):
        right.append(f"<answer>{example.meta['answer_text']}</answer>")
    wrong = "<answer>Z</answer>" if example.task == "multiple_choice" else "<answer>987654321</answer>"
    if example.task == "classification":
        wrong = "<answer>a kind of teapot</answer>"
    return right, wrong


@pytest.mark.parametrize("source", SOURCES)
def test_loaded_labels_verify_against_themselves(source):
    examples, _ = load_examples(FIXTURES / source, allow_missing_images=True, image_check="exists")
    scored = 0
    for example in examples:
        reward = reward_for_task(example.task)
        row = {"meta": example.meta, "id": example.id}
        right, wrong = _answers(example)
        for text in right:
            result = reward.score_one(text, example.answer, **row)
            assert result.score == 1.0, (source, example.id, text, example.answer, result)
        assert reward.score_one(wrong, example.answer, **row).score == 0.0, (source, example.id, wrong)
        scored += 1
    assert scored >= 2, f"{source}: expected at least 2 examples with a verifier, got {scored}"

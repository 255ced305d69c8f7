"""Grounding in every coordinate space, with worked examples, and the smart-resize rule.

Worked setup used throughout: a 1920x1080 screenshot whose target is the box [1000, 500, 1200, 600]
in original pixels, centre (1100, 550). The same numbers mean different places in different spaces,
so each example also checks that reading them in the wrong space misses.
"""

from __future__ import annotations

import json

import pytest

from visent.rewards import get_reward
from visent.rewards.coords import from_original_pixels, smart_resize, to_original_pixels
from visent.rewards.geometry import parse_box_or_point

grounding = get_reward("grounding")
BOX = json.dumps([1000, 500, 1200, 600])
SIZE = (1920, 1080)
BY_SPACE = {
    "pixels": grounding,
    "resized_pixels": get_reward("grounding_resized"),
    "grid1000": get_reward("grounding_grid1000"),
    "unit": get_reward("grounding_unit"),
}


def score(text, space, **row):
    """Score with the reward for a model speaking ``space``; the label is in original pixels."""
    return BY_SPACE[space].score_one(text, BOX, coord_space="pixels", image_size=SIZE, **row)


def test_pixels_space():
    assert score("<answer>[1100, 550]</answer>", "pixels").score == 1.0
    assert score("<answer>[1000, 600]</answer>", "pixels").score == 1.0  # the corner counts (inclusive)
    assert score("<answer>[999, 550]</answer>", "pixels").score == 0.0
    # a predicted box scores by its centre: (1150+1250)/2 = 1200 -> on the right edge, inside
    result = score('<answer>{"bbox_2d": [1150, 520, 1250, 580]}</answer>', "pixels")
    assert result.score == 1.0
    # IoU of [1150,520,1250,580] with [1000,500,1200,600]: inter 50x60=3000; union 6000+20000-3000
    assert result.components["iou"] == pytest.approx(3000 / 23000)


def test_grid1000_space_qwen2_vl():
    # (573, 509) on the [0,1000) grid -> (573*1920/1000, 509*1080/1000) = (1100.16, 549.72): inside.
    assert score("<answer>[573, 509]</answer>", "grid1000").score == 1.0
    assert score("<answer>[573, 509]</answer>", "pixels").score == 0.0  # same numbers as pixels: (573, 509)
    # Qwen2-VL's native box syntax: centre (570, 510) -> (1094.4, 550.8): inside.
    assert score("<|box_start|>(520,470),(620,550)<|box_end|>", "grid1000").score == 1.0


def test_unit_space():
    # (0.573, 0.509) -> (1100.16, 549.72)
    assert score("<answer>(0.573, 0.509)</answer>", "unit").score == 1.0
    assert score("<answer>(0.573, 0.709)</answer>", "unit").score == 0.0  # y = 765.7: below the box


def test_resized_pixels_space_qwen2_5_vl():
    # smart_resize(1920, 1080) with the processor defaults (factor 28, max 28*28*1280 = 1,003,520 px):
    # rounding gives 1932x1092 = 2,109,744 px > max, so beta = sqrt(1920*1080/1003520) = 1.43747 and
    # w = floor(1920/1.43747/28)*28 = 47*28 = 1316, h = floor(1080/1.43747/28)*28 = 26*28 = 728.
    assert smart_resize(1920, 1080) == (1316, 728)
    # The centre (1100, 550) in resized pixels is (1100*1316/1920, 550*728/1080) = (753.96, 370.74).
    assert score("<answer>[754, 371]</answer>", "resized_pixels").score == 1.0
    assert score("<answer>[754, 371]</answer>", "pixels").score == 0.0
    # a box in resized pixels, centre (750, 370) -> (1094.3, 548.9)
    assert score('{"bbox_2d": [700, 340, 800, 400]}', "resized_pixels").score == 1.0
    # an explicit resized_size wins over recomputation: with a 960x540 resize, (754, 371) -> (1508, 742)
    assert score("<answer>[754, 371]</answer>", "resized_pixels", resized_size=[960, 540]).score == 0.0
    # processor limits change the resize: max_pixels = 640*28*28 -> beta = sqrt(2073600/501760) = 2.0329,
    # w = floor(33.73)*28 = 924, h = floor(18.97)*28 = 504; (1100, 550) -> (529.4, 256.7)
    assert smart_resize(1920, 1080, max_pixels=640 * 28 * 28) == (924, 504)
    assert score("[529, 257]", "resized_pixels", max_pixels=640 * 28 * 28).score == 1.0


@pytest.mark.parametrize(
    ("w", "h"),
    [(1920, 1080), (1080, 2400), (41, 401), (13, 17), (3000, 3000), (5000, 40), (28, 28), (4096, 2160)],
)
@pytest.mark.parametrize("max_pixels", [28 * 28 * 1280, 28 * 28 * 256, 12845056])
def test_smart_resize_matches_transformers(w, h, max_pixels):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    rh, rw = reference(h, w, factor=28, min_pixels=56 * 56, max_pixels=max_pixels)
    assert smart_resize(w, h, max_pixels=max_pixels) == (rw, rh)


@pytest.mark.parametrize("space", ["pixels", "resized_pixels", "grid1000", "unit"])
def test_space_round_trip(space):
    resized = smart_resize(*SIZE)
    there = from_original_pixels((1234.5, 67.25), space, SIZE, resized)
    assert to_original_pixels(there, space, SIZE, resized) == pytest.approx((1234.5, 67.25))


def test_prediction_formats():
    assert parse_box_or_point('{"point_2d": [3, 4]}') == (3.0, 4.0)
    assert parse_box_or_point('```json\n[{"bbox_2d": [5, 6, 1, 2], "label": "x"}]\n```') == (
        1.0,
        2.0,
        5.0,
        6.0,
    )
    assert parse_box_or_point("click(x=10, y=20)") == (10.0, 20.0)
    assert parse_box_or_point("first [1, 2] then finally (7.5, 8)") == (7.5, 8.0)
    assert parse_box_or_point("[1e999, 2]") is None  # overflow to inf is rejected
    assert parse_box_or_point("no numbers here") is None


def test_label_in_another_space_is_mapped_too():
    # the label [520, 460, 625, 555] on the grid is [998.4, 496.8, 1200, 599.4] px; (1100, 550) is inside,
    # (1201, 550) just right of it
    grid_box = json.dumps([520, 460, 625, 555])
    assert grounding.score_one("[1100, 550]", grid_box, coord_space="grid1000", image_size=SIZE).score == 1.0
    assert grounding.score_one("[1201, 550]", grid_box, coord_space="grid1000", image_size=SIZE).score == 0.0


def test_failures_are_flagged_not_raised():
    unparsable = score("I would click the settings icon", "pixels")
    assert unparsable.parse_failed and unparsable.score == 0.0
    missing_size = BY_SPACE["grid1000"].score_one("[573, 509]", BOX)
    assert missing_size.label_error and missing_size.score == 0.0
    bad_label = grounding.score_one("[1, 2]", "not a box", coord_space="pixels")
    assert bad_label.label_error
    unknown_space = grounding.score_one("[1, 2]", BOX, coord_space="inches", image_size=SIZE)
    assert unknown_space.label_error


def test_batch_with_meta_column_as_loaders_and_lab_write_it():
    # to_trl_dataset stores meta as JSON text; model_coord_space overrides the reward's space per row
    scores = grounding(
        ["<answer>[573, 509]</answer>", "<answer>[1100, 550]</answer>"],
        answer=[BOX, BOX],
        meta=[
            json.dumps(
                {"coord_space": "pixels", "model_coord_space": "grid1000", "image_size": [1920, 1080]}
            ),
            json.dumps({"coord_space": "pixels"}),
        ],
    )
    assert scores == [1.0, 1.0]

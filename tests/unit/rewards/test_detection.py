"""Detection reward (greedy IoU matching) and mAP@0.5, on hand-computed cases."""

from __future__ import annotations

import json

import pytest

from visent.rewards import get_reward, map50
from visent.rewards.detection import Detection, greedy_match, parse_detections

detection = get_reward("detection")
GT = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [20, 20, 30, 30], "label": "dog"}])


def det(objs) -> str:
    return "<answer>" + json.dumps(objs) + "</answer>"


def test_reward_sums_matched_iou_over_max_count():
    # cat: IoU 1; dog [20,20,30,35]: inter 100, union 100 + 150 - 100 = 150 -> 2/3.
    preds = [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [20, 20, 30, 35], "label": "dog"}]
    assert detection.score_one(det(preds), GT).score == pytest.approx((1 + 2 / 3) / 2)
    # an extra false positive raises the denominator to 3
    extra = [*preds, {"bbox_2d": [50, 50, 60, 60], "label": "cat"}]
    assert detection.score_one(det(extra), GT).score == pytest.approx((1 + 2 / 3) / 3)
    # a missed object: denominator stays #gt = 2
    assert detection.score_one(det(preds[:1]), GT).score == pytest.approx(0.5)


def test_labels_and_threshold():
    assert detection.score_one(det([{"bbox_2d": [0, 0, 10, 10], "label": "dog"}]), GT).score == 0.0
    # label spelling is normalised ("Cat " == "cat"); unlabeled predictions match any class
    assert detection.score_one(det([{"bbox_2d": [0, 0, 10, 10], "label": "Cat "}]), GT).score == 0.5
    assert detection.score_one(det([[0, 0, 10, 10]]), GT).score == 0.5
    # IoU exactly 0.5 matches ([0,0,10,20]: 100/200), just below does not ([0,0,10,21]: 100/210)
    assert detection.score_one(det([[0, 0, 10, 20]]), GT).score == pytest.approx(0.25)
    assert detection.score_one(det([[0, 0, 10, 21]]), GT).score == 0.0


def test_greedy_matching_by_descending_iou():
    # G1=[0,0,10,10], G2=[0,3,10,13]; P1=[0,2,10,12] has IoU 80/120 with G1 and 90/110 with G2;
    # P2=[0,0,10,9] has IoU 90/100 with G1 and 60/130 with G2. Best pair first: (P2,G1,.9), then (P1,G2,.818).
    gts = [Detection((0, 0, 10, 10)), Detection((0, 3, 10, 13))]
    preds = [Detection((0, 2, 10, 12)), Detection((0, 0, 10, 9))]
    matches = greedy_match(preds, gts)
    assert [(i, j) for i, j, _ in matches] == [(1, 0), (0, 1)]
    assert [m[2] for m in matches] == pytest.approx([0.9, 90 / 110])
    gt_text = json.dumps([[0, 0, 10, 10], [0, 3, 10, 13]])
    score = detection.score_one(det([[0, 2, 10, 12], [0, 0, 10, 9]]), gt_text).score
    assert score == pytest.approx((0.9 + 90 / 110) / 2)


def test_each_box_used_once():
    # two identical predictions on one object: one match, denominator 2
    assert detection.score_one(det([[0, 0, 10, 10], [0, 0, 10, 10]]), "[[0, 0, 10, 10]]").score == 0.5


def test_confidence_term():
    # w = 0.5; matched score 0.8 contributes 0.8, unmatched score 0.3 contributes 0.7 -> conf = 0.75.
    # IoU term: one exact match over max(1 gt, 2 preds) = 0.5. Total 0.5*0.5 + 0.5*0.75 = 0.625.
    preds = [{"bbox_2d": [0, 0, 10, 10], "score": 0.8}, {"bbox_2d": [50, 50, 60, 60], "score": 0.3}]
    result = get_reward("detection_confidence").score_one(det(preds), "[[0, 0, 10, 10]]")
    assert result.components["confidence"] == pytest.approx(0.75)
    assert result.score == pytest.approx(0.625)


def test_empty_and_unparsable():
    assert detection.score_one("<answer>[]</answer>", "[]").score == 1.0  # nothing there, nothing claimed
    assert detection.score_one("<answer>[]</answer>", GT).score == 0.0
    assert not detection.score_one("<answer>[]</answer>", GT).parse_failed
    failed = detection.score_one("there is a cat at the top left", GT)
    assert failed.parse_failed and failed.score == 0.0
    # JSON wrapped in prose still parses; a malformed entry inside a list is dropped
    assert parse_detections('boxes: [[0,0,1,1], "junk", {"bbox": [1,1,2,2]}] done') == [
        Detection((0, 0, 1, 1)),
        Detection((1, 1, 2, 2)),
    ]


def test_map50_hand_case():
    # One class, two images. Ranked by score: TP (img0), FP (img0), TP (img1):
    # recall .5 .5 1, precision 1 .5 2/3 -> envelope 1, 2/3, 2/3 -> AP = .5*1 + .5*(2/3) = 5/6.
    gts = [[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}], [{"bbox_2d": [5, 5, 15, 15], "label": "cat"}]]
    preds = [
        [
            {"bbox_2d": [0, 0, 10, 10], "label": "cat", "score": 0.9},
            {"bbox_2d": [40, 40, 50, 50], "label": "cat", "score": 0.8},
        ],
        [{"bbox_2d": [5, 5, 15, 14], "label": "cat", "score": 0.7}],
    ]
    result = map50(preds, gts)
    assert result["ap"]["cat"] == pytest.approx(5 / 6)
    # A second class with a true box but no prediction has AP 0 and halves the mean.
    gts2 = [gts[0] + [{"bbox_2d": [60, 60, 70, 70], "label": "dog"}], gts[1]]
    result2 = map50([json.dumps(p) for p in preds], [json.dumps(g) for g in gts2])
    assert result2["ap"] == pytest.approx({"cat": 5 / 6, "dog": 0.0})
    assert result2["map50"] == pytest.approx(5 / 12)


def test_map50_duplicates_and_perfect():
    gts = [[[0, 0, 10, 10]]]
    assert map50([[[0, 0, 10, 10]]], gts)["map50"] == pytest.approx(1.0)
    # a lower-scored duplicate of a matched box is an FP ranked after the TP:
    # recall 1, 1; precision 1, .5 -> envelope keeps 1 at recall 1 -> AP 1
    dup = [[{"bbox_2d": [0, 0, 10, 10], "score": 0.9}, {"bbox_2d": [0, 0, 10, 10], "score": 0.5}]]
    assert map50(dup, gts)["map50"] == pytest.approx(1.0)
    # FP first then TP: recall 0, 1; precision 0, .5 -> AP .5
    fp_first = [[{"bbox_2d": [30, 30, 40, 40], "score": 0.9}, {"bbox_2d": [0, 0, 10, 10], "score": 0.5}]]
    assert map50(fp_first, gts)["map50"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="predictions for"):
        map50([], gts)

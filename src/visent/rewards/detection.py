"""Open-vocabulary detection: JSON boxes, greedy IoU matching, and mAP@0.5 for evaluation.

Prediction and label are JSON lists of objects ``{"bbox_2d": [x1, y1, x2, y2], "label": "dog", "score": 0.9}``
(``bbox``/``box`` also accepted; ``label``/``score`` optional) or plain ``[x1, y1, x2, y2]`` lists, in
original-image pixels unless the reward's model space / the ``coord_space`` column say otherwise
(mapped exactly as in ``grounding``).

Reward (Visual-RFT style): pairs are matched greedily by descending IoU, each box used once, a pair
counting only at IoU >= 0.5 and, when both carry labels, equal normalised labels.
``iou_term = Σ IoU(matched) / max(#gt, #pred)`` (1.0 when both are empty).
With ``confidence_weight = w > 0``: ``reward = (1 - w)·iou_term + w·conf_term`` where ``conf_term`` is
the mean over predictions of ``score`` for matched and ``1 - score`` for unmatched ones (score
defaults to 1). Range [0, 1]. ``parse_failed`` when no JSON list/object of boxes is found; ``[]`` is a
valid (empty) prediction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from visent.rewards.base import LabelError, RewardResult
from visent.rewards.classification import normalize_label
from visent.rewards.extract import answer_region
from visent.rewards.geometry import BOX_KEYS, Box, iou, load_json, make_box
from visent.rewards.grounding import label_space_map, model_space_map

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Detection:
    box: Box
    label: str | None = None
    score: float = 1.0


def _to_detection(item: Any) -> Detection | None:
    if isinstance(item, dict):
        box = None
        for key in BOX_KEYS:
            if key in item:
                box = make_box(item[key])
                break
        if box is None:
            return None
        label = item.get("label", item.get("category", item.get("class")))
        label = normalize_label(str(label)) if label is not None else None
        score = item.get("score", item.get("confidence", 1.0))
        try:
            score = float(score)
        except (TypeError, ValueError):
            score = 1.0
        score = min(max(score, 0.0), 1.0) if math.isfinite(score) else 1.0
        return Detection(box, label or None, score)
    box = make_box(item)
    return Detection(box) if box is not None else None


def parse_detections(value: Any) -> list[Detection] | None:
    """Detections from JSON text or already-parsed lists/dicts; None when nothing box-like is found.

    Text is tried as a whole, then its outermost ``[...]`` then ``{...}`` (models wrap JSON in prose).
    Malformed entries inside an otherwise valid list are dropped.
    """
    obj = value
    if isinstance(value, str):
        obj = load_json(value)
        if obj is None:
            # find/rfind rather than a regex: linear even on adversarial text like "[[[[…".
            for open_, close in (("[", "]"), ("{", "}")):
                start, end = value.find(open_), value.rfind(close)
                if 0 <= start < end and (obj := load_json(value[start : end + 1])) is not None:
                    break
    if obj is None:
        return None
    if isinstance(obj, dict):
        for key in ("objects", "detections", "boxes", "annotations"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
        else:
            obj = [obj]
    if not isinstance(obj, list):
        return None
    if make_box(obj) is not None:  # a single bare box
        obj = [obj]
    found = [d for d in (_to_detection(item) for item in obj) if d is not None]
    if obj and not found:
        return None
    return found


def _labels_match(a: Detection, b: Detection) -> bool:
    return a.label is None or b.label is None or a.label == b.label


def greedy_match(preds: Sequence[Detection], gts: Sequence[Detection], threshold: float = IOU_THRESHOLD):
    """Greedy one-to-one matching by descending IoU: list of ``(pred_index, gt_index, iou)``."""
    pairs = []
    for i, p in enumerate(preds):
        for j, g in enumerate(gts):
            if _labels_match(p, g):
                overlap = iou(p.box, g.box)
                if overlap >= threshold:
                    pairs.append((overlap, i, j))
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_p, used_g, matches = set(), set(), []
    for overlap, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            matches.append((i, j, overlap))
    return matches


MAX_PREDICTIONS = 300  # beyond this a completion is degenerate; cap the O(P·G) matching


def score_detection_with(
    confidence_weight: float, model_space: str, text: str, answer: Any, **row: Any
) -> RewardResult:
    """Σ IoU of greedy matches / max(#gt, #pred), optionally mixed with a confidence term."""
    gts = parse_detections(answer)
    if gts is None:
        raise LabelError(f"'answer' {str(answer)[:80]!r} is not a JSON list of boxes")
    preds = parse_detections(answer_region(text))
    if preds is None:
        return RewardResult(0.0, None, {"iou": 0.0, "confidence": 0.0, "matched": 0.0}, parse_failed=True)
    preds = preds[:MAX_PREDICTIONS]
    # Predictions are mapped from the model's space and labels from theirs (see grounding).
    pred_map, gold_map = model_space_map(row, model_space), label_space_map(row)
    if pred_map.space != "pixels":
        preds = [Detection(pred_map(p.box), p.label, p.score) for p in preds]
    if gold_map.space != "pixels":
        gts = [Detection(gold_map(g.box), g.label, g.score) for g in gts]
    if not preds and not gts:
        return RewardResult(1.0, preds, {"iou": 1.0, "confidence": 1.0, "matched": 0.0})
    matches = greedy_match(preds, gts)
    iou_term = sum(m[2] for m in matches) / max(len(gts), len(preds))
    matched = {m[0] for m in matches}
    conf_term = (
        sum(p.score if i in matched else 1.0 - p.score for i, p in enumerate(preds)) / len(preds)
        if preds
        else 1.0
    )
    score = (1.0 - confidence_weight) * iou_term + confidence_weight * conf_term
    return RewardResult(
        score, preds, {"iou": iou_term, "confidence": conf_term, "matched": float(len(matches))}
    )


def make_score_detection(
    confidence_weight: float = 0.0, model_space: str = "pixels"
) -> Callable[..., RewardResult]:
    """A detection scorer ``(text, answer, **row)``; a picklable ``functools.partial``."""
    if not 0.0 <= confidence_weight <= 1.0:
        raise ValueError(f"confidence_weight must be in [0, 1], got {confidence_weight}")
    return functools.partial(score_detection_with, confidence_weight, model_space)


def _ap_all_points(recall: list[float], precision: list[float]) -> float:
    """Area under the precision envelope (VOC 2010+ all-point interpolation)."""
    r = [0.0, *recall, 1.0]
    p = [0.0, *precision, 0.0]
    for k in range(len(p) - 2, -1, -1):
        p[k] = max(p[k], p[k + 1])
    return sum((r[k + 1] - r[k]) * p[k + 1] for k in range(len(r) - 1))


def map50(predictions: Sequence[Any], ground_truths: Sequence[Any], threshold: float = IOU_THRESHOLD) -> dict:
    """mAP at IoU 0.5 over a dataset.

    Args:
        predictions: per image, the predicted detections (JSON text, list of dicts/lists, or a
            ``list[Detection]``); unparsable predictions count as no detections.
        ground_truths: per image, the true detections in the same forms. Boxes without labels form one
            class ``""``.
    Returns:
        ``{"map50": mean AP over classes with at least one true box, "ap": {class: AP}, "n_classes": k}``.
        Per class, predictions over all images are ranked by score (ties keep input order) and each
        is a true positive if it matches a not-yet-matched true box of that class in its image at
        IoU >= 0.5 (the highest-IoU one); AP uses all-point interpolation.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"map50: {len(predictions)} predictions for {len(ground_truths)} images")

    def as_list(value: Any) -> list[Detection]:
        if isinstance(value, list) and all(isinstance(d, Detection) for d in value):
            return value
        return parse_detections(value) or []

    preds = [as_list(p) for p in predictions]
    gts = [as_list(g) for g in ground_truths]
    classes = sorted({g.label or "" for image in gts for g in image})
    ap: dict[str, float] = {}
    for cls in classes:
        n_gt = sum(1 for image in gts for g in image if (g.label or "") == cls)
        ranked = [
            (p.score, order, img, p)
            for img, image in enumerate(preds)
            for order, p in enumerate(image)
            if (p.label or "") == cls
        ]
        ranked.sort(key=lambda t: (-t[0], t[2], t[1]))
        taken: set[tuple[int, int]] = set()
        tp_cum = fp_cum = 0
        recall, precision = [], []
        for _, _, img, p in ranked:
            best_j, best_iou = -1, threshold
            for j, g in enumerate(gts[img]):
                if (g.label or "") != cls or (img, j) in taken:
                    continue
                overlap = iou(p.box, g.box)
                if overlap >= best_iou:
                    best_j, best_iou = j, overlap
            if best_j >= 0:
                taken.add((img, best_j))
                tp_cum += 1
            else:
                fp_cum += 1
            recall.append(tp_cum / n_gt)
            precision.append(tp_cum / (tp_cum + fp_cum))
        ap[cls] = _ap_all_points(recall, precision) if ranked else 0.0
    mean = sum(ap.values()) / len(ap) if ap else 0.0
    return {"map50": mean, "ap": ap, "n_classes": len(ap)}

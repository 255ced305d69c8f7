"""GUI grounding: does the predicted point (or the predicted box's centre) land inside the true box?

Columns per row:
    answer        the true box in pixels of the original image: JSON ``[x1, y1, x2, y2]`` or
                  ``{"bbox_2d": [...]}``.
    coord_space   the space the *model* answers in (see ``coords.COORD_SPACES``); default ``pixels``.
    image_size    original ``(w, h)``; required for every space but ``pixels``.
    resized_size  optional ``(w, h)`` the processor resized to; for ``resized_pixels`` it is otherwise
                  recomputed with Qwen's ``smart_resize`` from ``image_size`` and the optional
                  ``min_pixels`` / ``max_pixels`` columns (processor defaults when absent).
These may also sit inside a ``meta`` dict column.

The answer is read from ``<answer>…</answer>`` when present, else from the whole text.
Range [0, 1]. Components: ``inside`` (0/1) and, when a box was predicted, ``iou`` with the true box.
"""

from __future__ import annotations

from typing import Any

from visent.rewards.base import LabelError, RewardResult, row_value
from visent.rewards.coords import (
    QWEN_FACTOR,
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    parse_size,
    smart_resize,
    to_original_pixels,
)
from visent.rewards.extract import answer_region
from visent.rewards.geometry import box_center, iou, parse_box_or_point, parse_label_box, point_in_box


def resolve_space(row: dict[str, Any], default_space: str = "pixels") -> tuple[str, Any, Any]:
    """``(coord_space, image_size, resized_size)`` for a row; raises LabelError when a needed size is missing."""
    space = str(row_value(row, "coord_space", default_space))
    image_size = parse_size(row_value(row, "image_size"))
    resized = parse_size(row_value(row, "resized_size"))
    if space != "pixels" and image_size is None:
        raise LabelError(f"coord_space {space!r} needs an 'image_size' column (w, h)")
    if space == "resized_pixels" and resized is None:
        try:
            resized = smart_resize(
                int(image_size[0]),
                int(image_size[1]),
                factor=int(row_value(row, "patch_factor", QWEN_FACTOR)),
                min_pixels=int(row_value(row, "min_pixels", QWEN_MIN_PIXELS)),
                max_pixels=int(row_value(row, "max_pixels", QWEN_MAX_PIXELS)),
            )
        except (TypeError, ValueError) as exc:
            raise LabelError(f"cannot compute the resized size: {exc}") from exc
    return space, image_size, resized


def to_pixels(coords: tuple, space: str, image_size: Any, resized: Any) -> tuple:
    """A point or box from the model's space to original pixels (boxes corner by corner)."""
    try:
        if len(coords) == 2:
            return to_original_pixels(coords, space, image_size, resized)
        x1, y1 = to_original_pixels(coords[:2], space, image_size, resized)
        x2, y2 = to_original_pixels(coords[2:], space, image_size, resized)
    except ValueError as exc:
        raise LabelError(str(exc)) from exc
    return x1, y1, x2, y2


def score_grounding(text: str, answer: Any, default_space: str = "pixels", **row: Any) -> RewardResult:
    """1.0 when the predicted point / box centre, mapped to original pixels, is inside the true box."""
    gold = parse_label_box(answer)
    if gold is None:
        raise LabelError(f"'answer' {str(answer)[:80]!r} is not a box [x1, y1, x2, y2]")
    space, image_size, resized = resolve_space(row, default_space)
    pred = parse_box_or_point(answer_region(text))
    if pred is None:
        return RewardResult(0.0, None, {"inside": 0.0}, parse_failed=True)
    pred_px = to_pixels(pred, space, image_size, resized)
    point = box_center(pred_px) if len(pred_px) == 4 else pred_px
    inside = float(point_in_box(point, gold))
    components = {"inside": inside}
    if len(pred_px) == 4:
        components["iou"] = iou(pred_px, gold)
    return RewardResult(inside, pred_px, components)

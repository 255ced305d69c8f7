"""GUI grounding: does the predicted point (or the predicted box's centre) land inside the true box?

Two coordinate spaces are involved and kept apart (see ``coords.COORD_SPACES``):

- the *model's* space: how the policy writes coordinates. It is a property of the model family, so it
  is chosen by the reward (``grounding`` = original pixels, ``grounding_resized`` = Qwen2.5-VL's resized
  pixels, ``grounding_grid1000`` = Qwen2-VL, ``grounding_unit`` = [0, 1]); a ``model_coord_space``
  column overrides it per row.
- the *label's* space: the ``coord_space`` column the data loaders write (``pixels`` of the original
  image for every shipped loader); other values are accepted and mapped the same way.

Columns per row (top level or inside the ``meta`` column, dict or JSON text):
    answer             the true box: JSON ``[x1, y1, x2, y2]`` or ``{"bbox_2d": [...]}``.
    coord_space        the label's space; default ``pixels``.
    model_coord_space  optional per-row override of the model's space.
    image_size         original ``(w, h)``; required whenever either space is not ``pixels``.
    resized_size       optional ``(w, h)`` the processor resized to; for ``resized_pixels`` it is otherwise
                       recomputed with Qwen's ``smart_resize`` from ``image_size`` and the optional
                       ``min_pixels`` / ``max_pixels`` columns (processor defaults when absent).

The answer is read from ``<answer>…</answer>`` when present, else from the whole text.
Range [0, 1]. Components: ``inside`` (0/1) and, when a box was predicted, ``iou`` with the true box.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from visent.rewards.base import LabelError, RewardResult, row_value
from visent.rewards.coords import (
    COORD_SPACES,
    QWEN_FACTOR,
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    parse_size,
    smart_resize,
    to_original_pixels,
)
from visent.rewards.extract import answer_region
from visent.rewards.geometry import box_center, iou, parse_box_or_point, parse_label_box, point_in_box


class SpaceMap:
    """Maps points and boxes of one coordinate space to original pixels for one row."""

    def __init__(self, space: str, image_size: Any, resized_size: Any) -> None:
        self.space, self.image_size, self.resized_size = space, image_size, resized_size

    def __call__(self, coords: tuple) -> tuple:
        """A point ``(x, y)`` or box ``(x1, y1, x2, y2)`` in this space -> original pixels."""
        try:
            if len(coords) == 2:
                return to_original_pixels(coords, self.space, self.image_size, self.resized_size)
            x1, y1 = to_original_pixels(coords[:2], self.space, self.image_size, self.resized_size)
            x2, y2 = to_original_pixels(coords[2:], self.space, self.image_size, self.resized_size)
        except ValueError as exc:
            raise LabelError(str(exc)) from exc
        return x1, y1, x2, y2


def space_map(row: dict[str, Any], space: str) -> SpaceMap:
    """The mapping from ``space`` to original pixels for ``row``; LabelError when a needed size is missing."""
    if space not in COORD_SPACES:
        raise LabelError(f"unknown coordinate space {space!r}; valid: {', '.join(COORD_SPACES)}")
    image_size = parse_size(row_value(row, "image_size"))
    resized = parse_size(row_value(row, "resized_size"))
    if space != "pixels" and image_size is None:
        raise LabelError(f"coordinate space {space!r} needs an 'image_size' column (w, h)")
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
    return SpaceMap(space, image_size, resized)


def model_space_map(row: dict[str, Any], model_space: str) -> SpaceMap:
    return space_map(row, str(row_value(row, "model_coord_space", model_space)))


def label_space_map(row: dict[str, Any]) -> SpaceMap:
    return space_map(row, str(row_value(row, "coord_space", "pixels")))


def score_grounding_in_space(model_space: str, text: str, answer: Any, **row: Any) -> RewardResult:
    """1.0 when the predicted point / box centre, mapped from ``model_space`` to original pixels, is inside
    the true box."""
    gold_raw = parse_label_box(answer)
    if gold_raw is None:
        raise LabelError(f"'answer' {str(answer)[:80]!r} is not a box [x1, y1, x2, y2]")
    gold = label_space_map(row)(gold_raw)
    to_pixels = model_space_map(row, model_space)
    pred = parse_box_or_point(answer_region(text))
    if pred is None:
        return RewardResult(0.0, None, {"inside": 0.0, "iou": 0.0}, parse_failed=True)
    pred_px = to_pixels(pred)
    point = box_center(pred_px) if len(pred_px) == 4 else pred_px
    inside = float(point_in_box(point, gold))
    # iou is 0 for point predictions, so the component is defined (and averageable) on every row.
    overlap = iou(pred_px, gold) if len(pred_px) == 4 else 0.0
    return RewardResult(inside, pred_px, {"inside": inside, "iou": overlap})


def make_score_grounding(model_space: str = "pixels") -> Callable[..., RewardResult]:
    """A grounding scorer ``(text, answer, **row)`` for a model that writes coordinates in ``model_space``.

    A ``functools.partial`` of a module-level function, so rewards stay picklable (multiprocess workers).
    """
    if model_space not in COORD_SPACES:
        raise ValueError(f"unknown coordinate space {model_space!r}; valid: {', '.join(COORD_SPACES)}")
    return functools.partial(score_grounding_in_space, model_space)

"""Boxes and points: parsing them out of model text or label JSON, IoU, containment.

Boxes are ``(x1, y1, x2, y2)`` floats with ``x1 <= x2``, ``y1 <= y2`` (corners are re-ordered on parse).
Parsing is tolerant (JSON objects or lists, Qwen2-VL's ``(x1,y1),(x2,y2)``, bracketed tuples,
``x=…, y=…``) and never raises on model text; non-finite numbers are rejected.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

Box = tuple[float, float, float, float]
Point = tuple[float, float]

BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d")
POINT_KEYS = ("point_2d", "point", "click", "coordinate", "coordinates", "position")
MAX_SCAN_CHARS = 20_000  # only the tail of a runaway generation is searched

_N = r"(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
_SEP = r"\s*,\s*"
_TWO_POINT_BOX = re.compile(rf"\(\s*{_N}{_SEP}{_N}\s*\)\s*,?\s*\(\s*{_N}{_SEP}{_N}\s*\)")
_FOUR = re.compile(rf"[\[\(]\s*{_N}{_SEP}{_N}{_SEP}{_N}{_SEP}{_N}\s*[\]\)]")
_XY = re.compile(rf"\bx\s*[=:]\s*{_N}\s*,?\s*y\s*[=:]\s*{_N}", re.IGNORECASE)
_TWO = re.compile(rf"[\[\(]\s*{_N}{_SEP}{_N}\s*[\]\)]")
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def _finite(values: Any) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(math.isfinite(v) for v in out):
        return None
    return out


def make_box(values: Any) -> Box | None:
    """Four finite numbers -> an ordered box, else None."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 4:
        return None
    v = _finite(values)
    if v is None:
        return None
    return min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])


def make_point(values: Any) -> Point | None:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 2:
        return None
    v = _finite(values)
    return (v[0], v[1]) if v is not None else None


def box_center(box: Box) -> Point:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def box_area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 when the union is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def point_in_box(point: Point, box: Box) -> bool:
    """Inclusive containment (a click on the border counts)."""
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def load_json(text: str) -> Any:
    """``json.loads`` after stripping a Markdown code fence; None when it is not JSON."""
    try:
        return json.loads(_FENCE.sub("", text.strip()))
    except (ValueError, RecursionError):
        return None


def _from_obj(obj: Any, depth: int = 0) -> Box | Point | None:
    """A box or point from a parsed JSON value (dict with known keys, list of numbers, or list of those)."""
    if isinstance(obj, dict):
        for key in BOX_KEYS:
            if key in obj:
                box = make_box(obj[key])
                if box is not None:
                    return box
        for key in POINT_KEYS:
            if key in obj:
                found = make_point(obj[key]) or make_box(obj[key])
                if found is not None:
                    return found
        if "x" in obj and "y" in obj:
            return make_point((obj["x"], obj["y"]))
        return None
    if isinstance(obj, list):
        found = make_box(obj) or make_point(obj)
        if found is not None:
            return found
        if obj and isinstance(obj[0], (dict, list)) and depth < 3:
            return _from_obj(obj[0], depth + 1)
    return None


def parse_box_or_point(text: str) -> Box | Point | None:
    """The model's box or point: whole-text JSON first, else the last coordinate pattern in the text.

    Returns a 4-tuple (box) or a 2-tuple (point), in whatever coordinate space the model used.
    """
    text = text[-MAX_SCAN_CHARS:]
    obj = load_json(text)
    if obj is not None:
        found = _from_obj(obj)
        if found is not None:
            return found
    best: tuple[int, int, tuple] | None = None  # (end position, priority, coords)
    for priority, pattern in ((3, _TWO_POINT_BOX), (2, _FOUR), (1, _XY), (0, _TWO)):
        for match in pattern.finditer(text):
            candidate = (match.end(), priority, match.groups())
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None:
        return None
    coords = best[2]
    return make_box(coords) if len(coords) == 4 else make_point(coords)


def parse_label_box(answer: Any) -> Box | None:
    """The true box from a label: JSON text or a parsed list/dict; None if it is not one box."""
    obj = load_json(answer) if isinstance(answer, str) else answer
    found = _from_obj(obj) if obj is not None else None
    return found if found is not None and len(found) == 4 else None

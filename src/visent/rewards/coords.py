"""Coordinate spaces models speak, and the mapping back to the original image's pixels.

Labels are boxes in pixels of the *original* image. Models answer in one of:

- ``pixels``          absolute pixels of the original image (identity);
- ``resized_pixels``  absolute pixels of the image the processor actually fed the model (Qwen2.5-VL):
                      the original resized by :func:`smart_resize` to multiples of 28 within
                      ``[min_pixels, max_pixels]``; mapping needs the original size and the resized size
                      (given, or recomputed with the processor's ``min_pixels``/``max_pixels``);
- ``grid1000``        Qwen2-VL's relative grid: x, y in [0, 1000) of the width and height;
- ``unit``            relative coordinates in [0, 1].

All sizes are ``(width, height)`` in pixels; points are ``(x, y)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

COORD_SPACES: tuple[str, ...] = ("pixels", "resized_pixels", "grid1000", "unit")

# Qwen2-VL / Qwen2.5-VL image processor defaults: patch 14 merged 2x2 -> factor 28,
# min_pixels = 56*56, max_pixels = 28*28*1280.
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280


def smart_resize(
    width: int,
    height: int,
    *,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """The ``(width, height)`` Qwen2(.5)-VL's processor resizes a ``width x height`` image to.

    Rule (Qwen2-VL image processor): round each side to the nearest multiple of ``factor``; if the area
    exceeds ``max_pixels`` scale both sides down by ``sqrt(area / max_pixels)`` and floor to multiples of
    ``factor``; if below ``min_pixels`` scale up by ``sqrt(min_pixels / area)`` and ceil. Aspect ratio
    is thereby kept approximately, and both sides are at least ``factor``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(width, height) / min(width, height) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds 200, which Qwen's processor rejects")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


def parse_size(value: Any) -> tuple[float, float] | None:
    """``(w, h)`` from a pair, ``"WxH"``, JSON text of either, or ``{"width": w, "height": h}``; else None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*[x×,]\s*(\d+(?:\.\d+)?)", text)
        if match:
            value = (float(match.group(1)), float(match.group(2)))
        else:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):  # also 5000-digit numbers and absurd nesting
                return None
    if isinstance(value, dict):
        value = (value.get("width", value.get("w")), value.get("height", value.get("h")))
    if isinstance(value, Sequence) and len(value) == 2:
        try:
            w, h = float(value[0]), float(value[1])
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
            return None
        if w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h):
            return w, h
    return None


def _pixels_per_unit(
    space: str, image_size: tuple[float, float] | None, resized_size: tuple[float, float] | None
) -> tuple[float, float]:
    """Original-image pixels per unit of ``space`` along x and y (1, 1 for ``pixels``).

    Raises ValueError for an unknown space or a missing size (a label/config problem, not model text).
    """
    if space == "pixels":
        return 1.0, 1.0
    if space not in COORD_SPACES:
        raise ValueError(f"unknown coord_space {space!r}; valid: {', '.join(COORD_SPACES)}")
    if image_size is None:
        raise ValueError(f"coord_space {space!r} needs the original image_size (w, h)")
    w, h = image_size
    if space == "grid1000":
        return w / 1000.0, h / 1000.0
    if space == "unit":
        return w, h
    if resized_size is None:
        raise ValueError("coord_space 'resized_pixels' needs resized_size or the image_size to recompute it")
    rw, rh = resized_size
    return w / rw, h / rh


def to_original_pixels(
    xy: tuple[float, float],
    space: str,
    image_size: tuple[float, float] | None,
    resized_size: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Map a point from ``space`` to pixels of the original ``image_size = (w, h)``.

    Raises ValueError for an unknown space or a missing size (a label/config problem, not model text).
    """
    sx, sy = _pixels_per_unit(space, image_size, resized_size)
    return xy[0] * sx, xy[1] * sy


def from_original_pixels(
    xy: tuple[float, float],
    space: str,
    image_size: tuple[float, float] | None,
    resized_size: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Inverse of :func:`to_original_pixels` (used by prompts/tests to express labels in a model's space)."""
    sx, sy = _pixels_per_unit(space, image_size, resized_size)
    return xy[0] / sx, xy[1] / sy

"""GUI layouts: ScreenSpot(-v2) in the ScreenSpot-Pro schema, the original SeeClick ScreenSpot schema, and
UI-R1's AndroidControl action format.

Grounding examples store the true box as JSON ``[x1, y1, x2, y2]`` in absolute pixels of the *original*
screenshot (``meta["coord_space"] = "pixels"``) and ``meta["image_size"] = [W, H]`` when known; mapping to a
model's own coordinate space is the reward's job.
"""

from __future__ import annotations

import json
from typing import Any

from visent.data.errors import BAD_VALUE, BOX_OUTSIDE_IMAGE
from visent.data.formats.base import Format, has_columns
from visent.data.formats.context import (
    RowContext,
    box_text,
    check_box,
    default_id,
    parse_box,
    parse_size,
    require,
    resolve_images,
)
from visent.data.schema import Example


def _screen_size(row: dict, ctx: RowContext, sizes: list) -> tuple[int, int] | None:
    """The screenshot size: the declared ``img_size`` checked against the file when both exist."""
    declared = parse_size(row["img_size"], ctx, "img_size") if row.get("img_size") is not None else None
    actual = tuple(sizes[0]) if sizes and sizes[0] is not None else None
    if declared and actual and declared != actual:
        # The box is in the declared pixel space; a resized screenshot would silently shift every target.
        raise ctx.error(f"img_size {list(declared)} differs from the image file's size {list(actual)}",
                        reason=BAD_VALUE, field="img_size")
    return declared or actual


def _grounding(row: dict, ctx: RowContext, box: list[float], size: tuple[int, int] | None, images: list,
               extra: dict[str, Any]) -> Example:
    check_box(box, size, ctx, "bbox")
    if size is None:
        ctx.report.notes["grounding box not bounds-checked (image size unknown)"] += 1
    meta: dict[str, Any] = {"coord_space": "pixels", "box_format": "xyxy", **extra, **ctx.source_meta()}
    if size is not None:
        meta["image_size"] = [int(size[0]), int(size[1])]
    for k in ("platform", "ui_type", "group", "data_type", "data_source", "application"):
        if row.get(k) is not None:
            meta[k] = row[k]
    id_ = str(row["id"]) if row.get("id") is not None else default_id(ctx)
    return Example(id=id_, task="grounding", prompt=require(row, "instruction", ctx).strip(), images=images,
                   answer=box_text(box), meta=meta)


def parse_screenspot_pro(row: dict, ctx: RowContext) -> Example:
    """``{img_filename, bbox: [x1, y1, x2, y2], instruction, img_size: [W, H], platform, ui_type, group}``
    (ScreenSpot-Pro, and GUI-Actor's conversion of ScreenSpot-v2). ``img_size`` may be absent (UI-R1's
    grounding json has the same fields without it); the file's size is used then."""
    images, sizes = resolve_images(require(row, "img_filename", ctx), ctx, "img_filename")
    box = parse_box(require(row, "bbox", ctx, answer=True), ctx, "bbox")
    return _grounding(row, ctx, box, _screen_size(row, ctx, sizes), images, {})


def parse_seeclick(row: dict, ctx: RowContext) -> Example:
    """The original SeeClick ScreenSpot / OS-Atlas ScreenSpot-v2 json:
    ``{img_filename, bbox: [x, y, w, h], instruction, data_type, data_source}`` in absolute pixels.
    Converted to ``[x, y, x + w, y + h]`` as SeeClick's own evaluation script does."""
    images, sizes = resolve_images(require(row, "img_filename", ctx), ctx, "img_filename")
    x, y, w, h = parse_box(require(row, "bbox", ctx, answer=True), ctx, "bbox")
    return _grounding(row, ctx, [x, y, x + w, y + h], _screen_size(row, ctx, sizes), images,
                      {"bbox_xywh": [x, y, w, h]})


UI_R1_ACTIONS: dict[str, tuple[str, ...]] = {
    "click": ("x", "y"),
    "scroll": ("direction",),
    "input_text": ("text",),
    "open_app": ("app_name",),
    "navigate_back": (),
}


def parse_ui_r1(row: dict, ctx: RowContext) -> Example:
    """UI-R1 AndroidControl: ``{image, gt: {action_type, x, y | direction | text | app_name}, task}``.

    Task ``other`` (a GUI action): ``answer`` is the ``gt`` object as JSON, click coordinates in absolute
    pixels of the screenshot; ``meta["action_type"]`` names the action.
    """
    images, sizes = resolve_images(require(row, "image", ctx), ctx, "image")
    gt = require(row, "gt", ctx, answer=True)
    if not isinstance(gt, dict):
        raise ctx.error(f"expected an action object, got {gt!r}", field="gt")
    kind = gt.get("action_type")
    if kind not in UI_R1_ACTIONS:
        raise ctx.error(f"unknown action_type {kind!r}; valid: {', '.join(UI_R1_ACTIONS)}", field="gt.action_type")
    for key in UI_R1_ACTIONS[kind]:
        if gt.get(key) is None:
            raise ctx.error(f"{kind} action needs {key!r}", reason="missing_answer", field=f"gt.{key}")
    meta: dict[str, Any] = {"action_type": kind, "coord_space": "pixels", **ctx.source_meta()}
    if kind == "click":
        px, py = gt["x"], gt["y"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (px, py)):
            raise ctx.error(f"click needs numeric x, y, got {px!r}, {py!r}", field="gt")
        if sizes and sizes[0] is not None:
            w, h = sizes[0]
            meta["image_size"] = [w, h]
            if not (0 <= px <= w and 0 <= py <= h):
                raise ctx.error(f"click ({px}, {py}) lies outside the {w}x{h} image", reason=BOX_OUTSIDE_IMAGE,
                                field="gt")
    return Example(id=default_id(ctx), task="other", prompt=require(row, "task", ctx).strip(), images=images,
                   answer=json.dumps(gt, ensure_ascii=False), meta=meta)


FORMATS: dict[str, Format] = {
    "screenspot_pro": Format(
        "screenspot_pro", "grounding",
        "ScreenSpot-Pro schema (also GUI-Actor's ScreenSpot-v2): img_filename / bbox [x1,y1,x2,y2] / img_size",
        parse_screenspot_pro, detect=lambda r: has_columns(r, "img_filename", "bbox", "instruction", "img_size")),
    "seeclick": Format(
        "seeclick", "grounding",
        "original SeeClick ScreenSpot json: img_filename / bbox [x,y,w,h] / instruction / data_type / data_source",
        parse_seeclick,
        detect=lambda r: has_columns(r, "img_filename", "bbox", "instruction", "data_type", "data_source")
        and "img_size" not in r),
    "ui_r1": Format(
        "ui_r1", "other", "UI-R1 AndroidControl actions: image / gt {action_type, ...} / task",
        parse_ui_r1, detect=lambda r: has_columns(r, "image", "gt", "task")),
}

"""The shape tasks' renderers (counting, grounding, classification): seeded, rendered with PIL.

Design constraints (the lab trains a ~1M-parameter Qwen2.5-VL from scratch on 2 CPU cores):

- Images are tiny and aligned to the merged vision tokens (14-px patches merged 2×2, so one token per
  28×28 cell), and each object nearly fills its cell. A token that is mostly object is far from a
  background token in feature space, and a from-scratch model learns to read it in ~50–250 SFT steps;
  with small objects jittered inside 14-px cells it stayed at chance for 400+ steps (measurements in
  ``visent.lab.warmstart``).
- Counting and classification are "what / how many" questions the tiny model learns quickly.
  Grounding needs *where*, which a model with only relative (rotary) positions must learn from scratch;
  its screen background is tinted by region so that position is at least visible in the pixels, but it
  remains the hard task (near chance after a warm-start).
- Target responses are short (≈ 10–20 tokens) and mix tokens whose value must be read from the image
  (the count, the row/column, the shape's corners) with template tokens that do not depend on it (the
  tags, the colour named in the question, the answer copied from the reasoning). That contrast is what
  VEPO's counterfactual JSD is meant to find.

Answers follow ``visent.data.schema.Example`` conventions: counting → a number (``"3"``),
classification → a class name (``"triangle"``), grounding → the true box as JSON
``"[x1, y1, x2, y2]"`` in pixels of the original image (which is also the processor's resized image:
sizes are multiples of 28). A grounding response answers with a click point ``(x, y)``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from PIL import Image, ImageDraw

from visent.data.schema import Example

# Saturated, well-separated colours: a linear patch embedding can tell them apart immediately.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUND = (245, 245, 245)
# Distractors in "gray" mode: a neutral colour no question ever names.
GRAY = (130, 130, 130)
DISTRACTOR_MODES: tuple[str, ...] = ("none", "gray", "colors")

# Reasoning phrase per class: depends on the image, and fixes the answer that follows it.
_SHAPE_FEATURE = {
    "circle": "no corners",
    "square": "four corners",
    "triangle": "three corners",
    "cross": "four arms",
}


def draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, box: Sequence[float], fill: tuple[int, int, int]
) -> None:
    """Draw ``kind`` filling the axis-aligned ``box = (x0, y0, x1, y1)`` (pixels)."""
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif kind == "cross":
        w, h = x1 - x0, y1 - y0
        draw.rectangle((x0 + w / 3, y0, x1 - w / 3, y1), fill=fill)
        draw.rectangle((x0, y0 + h / 3, x1, y1 - h / 3), fill=fill)
    else:  # pragma: no cover - internal table
        raise ValueError(f"unknown shape {kind!r}; valid: {', '.join(SHAPES)}")


# --------------------------------------------------------------------------------------------------
# counting: "How many red shapes are there?" on an 84×84 image, at most one object per 28-px cell (one
# merged vision token each), so a token either shows an object of the named colour or it does not.


def _check_distractors(mode: str) -> None:
    if mode not in DISTRACTOR_MODES:
        raise ValueError(f"unknown distractors mode {mode!r}; valid: {', '.join(DISTRACTOR_MODES)}")


def _distractor_fill(
    rng: random.Random, mode: str, others: Sequence[str]
) -> tuple[str, tuple[int, int, int]]:
    if mode == "gray":
        return "gray", GRAY
    if mode == "colors":
        name = rng.choice(list(others))
        return name, COLORS[name]
    raise ValueError(f"unknown distractors mode {mode!r}; valid: {', '.join(DISTRACTOR_MODES)}")


def make_counting(
    rng: random.Random, example_id: str, size: int = 84, cell: int = 28, distractors: str = "gray"
) -> Example:
    _check_distractors(distractors)
    cols = rows = size // cell
    color = rng.choice(list(COLORS))
    count = rng.randint(1, 5)
    n_distractors = 0 if distractors == "none" else rng.randint(0, min(3, cols * rows - count))
    others = [c for c in COLORS if c != color]
    cells = rng.sample(range(cols * rows), count + n_distractors)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    objects = []
    for j, c in enumerate(cells):
        obj_color, fill = (color, COLORS[color]) if j < count else _distractor_fill(rng, distractors, others)
        kind = rng.choice(SHAPES[:3])
        # Objects nearly fill their cell: a vision token that is mostly object is read in tens of SFT
        # steps, one that is mostly background with a small jittered object takes hundreds.
        side = rng.randint(22, 25)
        cx, cy = (c % cols) * cell, (c // cols) * cell
        x0 = cx + rng.randint(1, cell - side - 1)
        y0 = cy + rng.randint(1, cell - side - 1)
        box = (x0, y0, x0 + side, y0 + side)
        draw_shape(draw, kind, box, fill)
        objects.append({"color": obj_color, "shape": kind, "box": list(box)})
    return Example(
        id=example_id,
        task="counting",
        prompt=f"How many {color} shapes are there?",
        images=[image],
        answer=str(count),
        meta={"color": color, "count": count, "objects": objects, "image_size": [size, size], "cell": cell},
    )


def counting_response(ex: Example) -> str:
    color, count = ex.meta["color"], ex.meta["count"]
    return f"<think>I see {count} {color} shapes.</think><answer>{count}</answer>"


# --------------------------------------------------------------------------------------------------
# grounding: "Click the blue button." on an 84×84 "screen": 2–4 buttons in a 3×3 grid of 28-px cells.
#
# The screen's background is tinted by region (a redder column to the right, a bluer row further
# down), as real screens have headers, sidebars and panels. This is not decoration: the vision tower
# sees positions only through rotary attention, which is relative, so on a uniform background a patch
# cannot tell where it is and "row 2, col 3" could not be read from the image at all.

_GROUND_GRID = 3


def _region_tint(row: int, col: int) -> tuple[int, int, int]:
    return (250 - 40 * col, 250 - 40 * row, 250)


def make_grounding(
    rng: random.Random,
    example_id: str,
    grid: int = _GROUND_GRID,
    cell: int = 28,
    distractors: str = "gray",
    button_half: tuple[int, int] = (8, 11),
) -> Example:
    _check_distractors(distractors)
    size = grid * cell
    n_buttons = 1 if distractors == "none" else rng.randint(2, min(4, grid * grid))
    colors = rng.sample(list(COLORS), n_buttons)
    cells = rng.sample(range(grid * grid), n_buttons)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for r in range(grid):
        for c in range(grid):
            draw.rectangle(
                (c * cell, r * cell, c * cell + cell - 1, r * cell + cell - 1), fill=_region_tint(r, c)
            )
    buttons = []
    for j, (color, c) in enumerate(zip(colors, cells)):
        col, row = c % grid, c // grid
        # Buttons are centred in their cell (sizes vary), so the click point is the cell centre.
        half_w, half_h = rng.randint(*button_half), rng.randint(button_half[0] - 2, button_half[1] - 2)
        mx, my = col * cell + cell // 2, row * cell + cell // 2
        box = [mx - half_w, my - half_h, mx + half_w, my + half_h]
        # The first button is the target; the others are the distractors.
        if j > 0:
            color, fill = _distractor_fill(rng, distractors, colors[1:])
        else:
            fill = COLORS[color]
        draw.rectangle(box, fill=fill, outline=(60, 60, 60))
        # A small white icon: clutter that does not identify the button (the colour does).
        icon = rng.choice(SHAPES)
        draw_shape(draw, icon, (mx - 3, my - 3, mx + 3, my + 3), (255, 255, 255))
        buttons.append({"color": color, "icon": icon, "box": box, "row": row + 1, "col": col + 1})
    target = buttons[0]
    x1, y1, x2, y2 = target["box"]
    return Example(
        id=example_id,
        task="grounding",
        prompt=f"Click the {target['color']} button.",
        images=[image],
        answer=json.dumps(target["box"]),
        meta={
            "color": target["color"],
            # Inclusive PIL box; the click target is its integer centre.
            "box": target["box"],
            "point": [(x1 + x2) // 2, (y1 + y2) // 2],
            "row": target["row"],
            "col": target["col"],
            "buttons": buttons,
            "image_size": [size, size],
            # Sizes are multiples of 28 within the tiny processor's pixel range, so the processor does
            # not resize: original pixels == resized pixels (Qwen2.5-VL's coordinate space).
            "coord_space": "pixels",
        },
    )


def grounding_response(ex: Example) -> str:
    m = ex.meta
    x, y = m["point"]
    return f"<think>{m['color']} button: row {m['row']}, col {m['col']}.</think><answer>({x}, {y})</answer>"


# --------------------------------------------------------------------------------------------------
# classification: one shape on a 56×56 image; classes differ only in their outline.


def make_classification(rng: random.Random, example_id: str, size: int = 56) -> Example:
    label = rng.choice(SHAPES)
    color = rng.choice(list(COLORS))
    # A large, nearly centred shape: every vision token sees the same part of the outline from image
    # to image (a corner, an arm, a curve), which is what makes the classes quick to learn.
    side = rng.randint(38, 46)
    x0 = (size - side) // 2 + rng.randint(-2, 2)
    y0 = (size - side) // 2 + rng.randint(-2, 2)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw_shape(ImageDraw.Draw(image), label, (x0, y0, x0 + side, y0 + side), COLORS[color])
    return Example(
        id=example_id,
        task="classification",
        prompt="Which shape is this: circle, square, triangle or cross?",
        images=[image],
        answer=label,
        meta={"label": label, "choices": list(SHAPES), "color": color, "image_size": [size, size]},
    )


def classification_response(ex: Example) -> str:
    label = ex.meta["label"]
    return f"<think>It has {_SHAPE_FEATURE[label]}.</think><answer>{label}</answer>"

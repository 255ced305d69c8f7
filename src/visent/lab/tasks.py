"""Synthetic visual tasks for the lab: seeded, unlimited, rendered with PIL.

Every example is drawn from its own RNG seeded by ``(task, seed, index)``, so example ``i`` of a
stream is the same whatever ``n`` is asked for, and two streams with different seeds are independent.

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

import inspect
import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image, ImageDraw

from visent.data.schema import Example

# Bump when a renderer or a target response changes: cached warm-started models are keyed on it.
TASKS_VERSION = 2

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


def _draw_shape(
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


def _make_counting(
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
        _draw_shape(draw, kind, box, fill)
        objects.append({"color": obj_color, "shape": kind, "box": list(box)})
    return Example(
        id=example_id,
        task="counting",
        prompt=f"How many {color} shapes are there?",
        images=[image],
        answer=str(count),
        meta={"color": color, "count": count, "objects": objects, "image_size": [size, size], "cell": cell},
    )


def _counting_response(ex: Example) -> str:
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


def _make_grounding(
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
        _draw_shape(draw, icon, (mx - 3, my - 3, mx + 3, my + 3), (255, 255, 255))
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


def _grounding_response(ex: Example) -> str:
    m = ex.meta
    x, y = m["point"]
    return f"<think>{m['color']} button: row {m['row']}, col {m['col']}.</think><answer>({x}, {y})</answer>"


# --------------------------------------------------------------------------------------------------
# classification: one shape on a 56×56 image; classes differ only in their outline.


def _make_classification(rng: random.Random, example_id: str, size: int = 56) -> Example:
    label = rng.choice(SHAPES)
    color = rng.choice(list(COLORS))
    # A large, nearly centred shape: every vision token sees the same part of the outline from image
    # to image (a corner, an arm, a curve), which is what makes the classes quick to learn.
    side = rng.randint(38, 46)
    x0 = (size - side) // 2 + rng.randint(-2, 2)
    y0 = (size - side) // 2 + rng.randint(-2, 2)
    image = Image.new("RGB", (size, size), BACKGROUND)
    _draw_shape(ImageDraw.Draw(image), label, (x0, y0, x0 + side, y0 + side), COLORS[color])
    return Example(
        id=example_id,
        task="classification",
        prompt="Which shape is this: circle, square, triangle or cross?",
        images=[image],
        answer=label,
        meta={"label": label, "choices": list(SHAPES), "color": color, "image_size": [size, size]},
    )


def _classification_response(ex: Example) -> str:
    label = ex.meta["label"]
    return f"<think>It has {_SHAPE_FEATURE[label]}.</think><answer>{label}</answer>"


# --------------------------------------------------------------------------------------------------
# tally: "How many red shapes are there? Explain briefly." on the counting task's images (84×84, 1–5
# shapes of the asked colour and 0–3 gray distractors, at most one per 28-px cell), answered with ~35
# tokens of reasoning built so that VEPO's premise can hold and be *measured*:
#
# - image-independent forks: the opening sentence, the verb, the two nouns, a side remark, the closing
#   word and the answer noun are drawn at random for every example (7 choice points). None changes
#   correctness, so the SFT'd model learns them as near-uniform choices: high entropy that has nothing
#   to do with the image;
# - image-anchored tokens: the two counts (``I see 3 red shapes and 1 gray ones``) are read from the
#   image. Once the model reads the image at all, its uncertainty about a count sits below the forks'
#   (measured, not assumed: ``visent.lab.premise``, docs/lab-results.md);
# - derived tokens: the closing count and the answer copy the count already written; the answer is
#   decisive but depends on the image only through the anchored count.
#
# The image is the counting task's renderer unchanged (its reading is learnt in ~200 SFT steps); only the
# response differs. Every example records which character spans of its target response are forks,
# anchored or derived (``response_spans``), and ``label_response`` finds the same spans in any response
# the model writes in this grammar, so entropy / JSD can be split by role on sampled responses.

# Distinct first words: each fork is decided at one token.
TALLY_OPENERS: tuple[str, ...] = (
    "Let me look at the picture.",
    "Counting the shapes one by one.",
    "First, scan every cell.",
    "Looking at each cell.",
    "Here is what is drawn.",
    "Now check the image.",
    "Checking the cells in turn.",
    "Going cell by cell.",
)
TALLY_VERBS: tuple[str, ...] = ("see", "count", "find", "spot")
TALLY_NOUNS: tuple[str, ...] = ("shapes", "objects", "pieces", "items")
TALLY_NOTES: tuple[str, ...] = (
    "Gray ones do not count.",
    "Only {color} ones matter.",
    "Ignoring the gray ones.",
    "Skipping every gray one.",
    "Distractors are gray.",
    "Nothing else counts.",
)
TALLY_CLOSERS: tuple[str, ...] = ("So", "Thus", "Hence", "Therefore", "Overall")
TALLY_ANSWER_NOUNS: tuple[str, ...] = ("answer", "count", "total", "number")
SPAN_KINDS: tuple[str, ...] = ("fork", "anchor", "derived")


def _make_tally(rng: random.Random, example_id: str) -> Example:
    ex = _make_counting(rng, example_id, distractors="gray")
    m = dict(ex.meta)
    m["lab_task"] = "tally"
    m["gray"] = len(m["objects"]) - m["count"]
    # The wording of the target response, drawn here so that the response is a function of meta.
    m["wording"] = {
        "opener": rng.randrange(len(TALLY_OPENERS)),
        "verb": rng.randrange(len(TALLY_VERBS)),
        "noun": rng.randrange(len(TALLY_NOUNS)),
        "noun2": rng.randrange(len(TALLY_NOUNS)),
        "note": rng.randrange(len(TALLY_NOTES)),
        "closer": rng.randrange(len(TALLY_CLOSERS)),
        "answer_noun": rng.randrange(len(TALLY_ANSWER_NOUNS)),
    }
    # Scored like counting (an integer answer), and label noise treats it as counting.
    return Example(
        id=example_id,
        task="counting",
        prompt=f"{ex.prompt} Explain briefly.",
        images=ex.images,
        answer=ex.answer,
        meta=m,
    )


def _first_word(text: str) -> tuple[str, str]:
    cut = re.match(r"\w+", text).end()  # "First" of "First, scan every cell."
    return text[:cut], text[cut:]


def _tally_segments(ex: Example) -> list[tuple[str, str | None]]:
    """The target response as ``(text, kind)`` pieces; kind is one of ``SPAN_KINDS`` or ``None``."""
    m = ex.meta
    w = m["wording"]
    n, color = str(m["count"]), m["color"]
    open1, open2 = _first_word(TALLY_OPENERS[w["opener"]])
    note1, note2 = _first_word(TALLY_NOTES[w["note"]].format(color=color))
    return [
        ("<think>", None), (open1, "fork"), (open2 + " I ", None), (TALLY_VERBS[w["verb"]], "fork"),
        (" ", None), (n, "anchor"), (f" {color} ", None), (TALLY_NOUNS[w["noun"]], "fork"),
        (" and ", None), (str(m["gray"]), "anchor"), (" gray ", None), (TALLY_NOUNS[w["noun2"]], "fork"),
        (". ", None), (note1, "fork"), (note2 + " ", None), (TALLY_CLOSERS[w["closer"]], "fork"),
        (" the ", None), (TALLY_ANSWER_NOUNS[w["answer_noun"]], "fork"), (" is ", None), (n, "derived"),
        (".</think><answer>", None), (n, "derived"), ("</answer>", None),
    ]


def _tally_response(ex: Example) -> str:
    return "".join(text for text, _ in _tally_segments(ex))


_TALLY_MAIN = re.compile(r"\bI (\w+) (\d+) (?:red|green|blue|yellow) (\w+) and (\d+) gray (\w+)\.")
_TALLY_NOTE = re.compile(r"\s*(\w+)[^.<]*\.")
_TALLY_CLOSE = re.compile(r"\s*(\w+) the (\w+) is (\d+)\.")
_TALLY_ANSWER = re.compile(r"<answer>\s*(\d+)\s*</answer>")


def label_response(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` character spans of a tally-grammar response (kinds: ``SPAN_KINDS``).

    Works on any text the model writes, not only on target responses: the first word after ``<think>``
    is a fork; in ``I <verb> <n> <colour> <noun> and <g> gray <noun>.`` the two numbers are
    image-anchored and the verb and nouns are forks; the first word of the next sentence (the side
    remark) is a fork; in ``<closer> the <noun> is <n>.`` the closer and the noun are forks and the number
    is derived, as is the number in ``<answer>``. Text outside this grammar gets no spans (it counts as
    "the rest"); a partly followed grammar gets the spans of the parts it follows.
    """
    spans: list[tuple[int, int, str]] = []
    think = text.find("<think>")
    if think < 0:
        return spans
    end = text.find("</think>", think)
    body_end = end if end >= 0 else len(text)
    opener = re.compile(r"\s*(\w+)").match(text, think + len("<think>"), body_end)
    if opener:
        spans.append((opener.start(1), opener.end(1), "fork"))
    main = _TALLY_MAIN.search(text, think, body_end)
    if main:
        for g, kind in ((1, "fork"), (2, "anchor"), (3, "fork"), (4, "anchor"), (5, "fork")):
            spans.append((main.start(g), main.end(g), kind))
        note = _TALLY_NOTE.match(text, main.end(), body_end)
        if note and not _TALLY_CLOSE.match(text, main.end(), body_end):
            spans.append((note.start(1), note.end(1), "fork"))
            close = _TALLY_CLOSE.match(text, note.end(), body_end)
        else:
            close = _TALLY_CLOSE.match(text, main.end(), body_end)
        if close:
            spans += [(close.start(1), close.end(1), "fork"), (close.start(2), close.end(2), "fork")]
            spans.append((close.start(3), close.end(3), "derived"))
    if end >= 0:
        answer = _TALLY_ANSWER.search(text, end)
        if answer:
            spans.append((answer.start(1), answer.end(1), "derived"))
    return sorted(set(spans))


# Lab tasks whose generator marks forks and image-anchored tokens (``response_spans``, ``label_response``).
LABELLED_TASKS: tuple[str, ...] = ("tally",)


def response_spans(example: Example) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` spans of ``target_response(example)`` as the generator drew them.

    Tasks without forks or anchors marked by their generator (counting, grounding, classification)
    return ``[]``.
    """
    if _lab_task(example) != "tally":
        return []
    out, pos = [], 0
    for text, kind in _tally_segments(example):
        if kind is not None:
            out.append((pos, pos + len(text), kind))
        pos += len(text)
    return out


def token_kinds(pieces: Sequence[str], spans: Sequence[tuple[int, int, str]]) -> list[str | None]:
    """Kind of each token given its decoded text ``pieces`` (``"".join(pieces)`` is the response).

    A token gets the first kind of ``SPAN_KINDS`` order reversed — ``"derived"``, ``"anchor"``, ``"fork"``
    — whose span its characters overlap, else ``None``. Byte-level BPE glues a leading space to a word
    (``" blue"``), which is why overlap, not containment, decides.
    """
    out: list[str | None] = []
    pos = 0
    for piece in pieces:
        a, b = pos, pos + len(piece)
        kinds = {k for s, e, k in spans if s < b and a < e}
        out.append(next((k for k in ("derived", "anchor", "fork") if k in kinds), None))
        pos = b
    return out


# --------------------------------------------------------------------------------------------------
# Public API


TASK_MAKERS: dict[str, Callable[[random.Random, str], Example]] = {
    "counting": _make_counting,
    "grounding": _make_grounding,
    "classification": _make_classification,
    "tally": _make_tally,
}
RESPONSES: dict[str, Callable[[Example], str]] = {
    "counting": _counting_response,
    "grounding": _grounding_response,
    "classification": _classification_response,
    "tally": _tally_response,
}
# Reward ``visent.lab.rl`` trains each lab task with (accuracy + format, [0, 2]).
TASK_REWARD: dict[str, str] = {
    "counting": "r1_counting",
    "grounding": "r1_grounding",
    "classification": "r1_classification",
    "tally": "r1_counting",
}
# The tasks whose text the tiny tokenizer is trained on by default (``task_texts()``). Newer tasks are
# left out so that the counting / grounding / classification models, and the studies measured on them,
# stay bit-for-bit reproducible; ``visent.lab.warmstart`` adds a newer task's text to the tokenizer
# corpus when it warm-starts on it.
TOKENIZER_TASKS: tuple[str, ...] = ("counting", "grounding", "classification")


def _lab_task(example: Example) -> str:
    """The lab task that generated ``example`` (``meta["lab_task"]`` when it differs from ``task``)."""
    return str(example.meta.get("lab_task", example.task))


def _check_task(task: str) -> None:
    if task not in TASK_MAKERS:
        raise ValueError(f"unknown lab task {task!r}; valid tasks: {', '.join(TASK_MAKERS)}")


def make_examples(task: str, n: int, seed: int = 0, *, start: int = 0, **options: Any) -> list[Example]:
    """``n`` examples of ``task`` (indices ``start .. start+n-1`` of the stream for ``seed``).

    Example ``i`` depends only on ``(task, seed, i, options)``: ``make_examples(t, 10, s)[5]`` equals
    ``make_examples(t, 1, s, start=5)[0]``. Ids are ``"{task}-{seed}-{i}"``.

    ``options`` go to the task's renderer, e.g. ``distractors="gray"`` (default: distractor objects in a
    neutral gray, so the named colour alone finds the target) or ``"colors"`` (distractors in the other
    palette colours: the model must bind the colour named in the question to the image — harder).
    """
    _check_task(task)
    if n < 0:
        raise ValueError(f"make_examples: n must be >= 0, got {n}")
    accepted = [p for p in inspect.signature(TASK_MAKERS[task]).parameters if p not in ("rng", "example_id")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"task {task!r} has no option(s) {unknown}; valid options: {', '.join(accepted)}")
    out = []
    for i in range(start, start + n):
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes
        # (unlike hash(), which PYTHONHASHSEED randomises).
        rng = random.Random(f"visent-lab/{task}/{seed}/{i}")
        out.append(TASK_MAKERS[task](rng, f"{task}-{seed}-{i}", **options))
    return out


def target_response(example: Example) -> str:
    """The reference response used for SFT: ``<think>…</think><answer>…</answer>``.

    Built from the example's ``meta`` (the clean label), so label noise never leaks into SFT targets.
    """
    task = _lab_task(example)
    _check_task(task)
    return RESPONSES[task](example)


def task_texts(n_per_task: int = 200, seed: int = 0, tasks: Sequence[str] = TOKENIZER_TASKS) -> list[str]:
    """Prompts and target responses of ``tasks``: the corpus the tiny tokenizer is trained on.

    The default is ``TOKENIZER_TASKS`` (see there); ``visent.lab.warmstart`` passes the text of any other
    task it trains on to ``build_tiny(texts=...)``.
    """
    texts: list[str] = []
    for task in tasks:
        _check_task(task)
        for ex in make_examples(task, n_per_task, seed):
            texts.append(ex.prompt)
            texts.append(target_response(ex))
    return texts


def to_trl_dataset(examples: Sequence[Example]) -> Any:
    """A ``datasets.Dataset`` in the conversational image format TRL 1.16's ``GRPOTrainer`` consumes.

    Columns:
        prompt: ``[{"role": "user", "content": <question text>}]`` — plain string content; TRL inserts one
            ``{"type": "image"}`` block per image before the text (``prepare_multimodal_messages``).
        images: list of PIL images per row (may be empty for text-only rows).
        answer, clean_answer, is_noisy, task, id: the ``Example`` fields rewards and evaluation read.
        meta: the example's ``meta`` as a JSON string (Arrow cannot hold arbitrary nested dicts).
    """
    from datasets import Dataset

    if not examples:
        raise ValueError("to_trl_dataset: no examples given")
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": ex.prompt}] for ex in examples],
            "images": [list(ex.images) for ex in examples],
            "answer": [ex.answer for ex in examples],
            "clean_answer": [ex.clean_answer for ex in examples],
            "is_noisy": [bool(ex.is_noisy) for ex in examples],
            "task": [ex.task for ex in examples],
            "id": [ex.id for ex in examples],
            "meta": [json.dumps(ex.meta) for ex in examples],
        }
    )

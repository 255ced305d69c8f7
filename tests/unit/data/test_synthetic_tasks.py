"""Synthetic lab tasks: reproducible by seed, and every answer agrees with what was drawn (checked from pixels)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visent.data.synthetic import TASK_MAKERS, make_examples, target_response, to_trl_dataset
from visent.data.synthetic.shapes import COLORS, DISTRACTOR_MODES, GRAY


def _pixels(ex) -> np.ndarray:
    return np.asarray(ex.images[0].convert("RGB"), dtype=np.int16)


def _mask(arr: np.ndarray, color: str) -> np.ndarray:
    """(H, W) bool: pixels within a small tolerance of a palette colour (anti-aliasing free: PIL fills exactly)."""
    return np.abs(arr - np.array(COLORS[color])).sum(-1) <= 6


@pytest.mark.parametrize("task", list(TASK_MAKERS))
def test_reproducible_by_seed_and_index(task):
    a = make_examples(task, 6, seed=11)
    b = make_examples(task, 6, seed=11)
    c = make_examples(task, 6, seed=12)
    tail = make_examples(task, 2, seed=11, start=4)
    assert [e.id for e in a] == [f"{task}-11-{i}" for i in range(6)]
    for x, y in zip(a, b):
        assert (x.prompt, x.answer, x.meta) == (y.prompt, y.answer, y.meta)
        assert np.array_equal(_pixels(x), _pixels(y))
    assert [np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, c)].count(True) < 6
    for x, y in zip(a[4:], tail):
        assert x.id == y.id and np.array_equal(_pixels(x), _pixels(y))


@pytest.mark.parametrize("distractors", DISTRACTOR_MODES)
def test_counting_answer_matches_the_pixels(distractors):
    counts = set()
    for ex in make_examples("counting", 60, seed=0, distractors=distractors):
        arr, color = _pixels(ex), ex.meta["color"]
        assert ex.prompt == f"How many {color} shapes are there?"
        hit = _mask(arr, color)
        # At most one object per cell: count the cells holding the asked colour.
        cell, (w, h) = ex.meta["cell"], ex.images[0].size
        cells = sum(
            bool(hit[r : r + cell, c : c + cell].any()) for r in range(0, h, cell) for c in range(0, w, cell)
        )
        assert str(cells) == ex.answer == ex.clean_answer
        assert f"<answer>{cells}</answer>" in target_response(ex)
        counts.add(cells)
    assert counts == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("distractors", DISTRACTOR_MODES)
def test_grounding_box_holds_the_named_button(distractors):
    for ex in make_examples("grounding", 60, seed=0, distractors=distractors):
        arr, color = _pixels(ex), ex.meta["color"]
        x1, y1, x2, y2 = json.loads(ex.answer)
        assert [x1, y1, x2, y2] == ex.meta["box"]
        w, h = ex.meta["image_size"]
        assert (w, h) == ex.images[0].size and 0 <= x1 < x2 < w and 0 <= y1 < y2 < h
        hit = _mask(arr, color)
        ys, xs = np.nonzero(hit)
        # Every pixel of the named colour lies inside the box (no other button shares the colour),
        # and the colour fills most of it.
        assert xs.min() >= x1 and xs.max() <= x2 and ys.min() >= y1 and ys.max() <= y2
        assert hit[y1 : y2 + 1, x1 : x2 + 1].mean() > 0.5
        px, py = ex.meta["point"]
        assert x1 <= px <= x2 and y1 <= py <= y2
        assert f"<answer>({px}, {py})</answer>" in target_response(ex)


def _classify_from_pixels(arr: np.ndarray, color: str) -> str:
    hit = _mask(arr, color)
    ys, xs = np.nonzero(hit)
    box = hit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    top_width = box[0].mean()
    if fill > 0.95:
        return "square"
    if fill > 0.7:
        return "circle"
    return "triangle" if top_width < 0.2 else "cross"


def test_classification_label_matches_the_outline():
    labels = set()
    for ex in make_examples("classification", 60, seed=0):
        assert _classify_from_pixels(_pixels(ex), ex.meta["color"]) == ex.answer
        assert target_response(ex).endswith(f"<answer>{ex.answer}</answer>")
        labels.add(ex.answer)
    assert labels == set(ex.meta["choices"])


def test_unknown_task_or_option_lists_valid_ones():
    with pytest.raises(ValueError, match="counting, grounding, classification"):
        make_examples("ocr", 1, 0)
    with pytest.raises(ValueError, match="valid options: size, cell, distractors"):
        make_examples("counting", 1, 0, colour="red")
    with pytest.raises(ValueError, match="none, gray, colors"):
        make_examples("grounding", 1, 0, distractors="plaid")


def test_colored_distractors_use_other_palette_colours():
    seen_other = False
    for ex in make_examples("counting", 30, seed=2, distractors="colors"):
        arr = _pixels(ex)
        assert not (np.abs(arr - np.array(GRAY)).sum(-1) <= 6).any()
        assert ex.meta["count"] + sum(o["color"] != ex.meta["color"] for o in ex.meta["objects"]) >= 1
        seen_other |= any(_mask(arr, c).any() for c in COLORS if c != ex.meta["color"])
    assert seen_other


def test_trl_dataset_columns_and_rows():
    exs = make_examples("counting", 3, seed=0) + make_examples("grounding", 2, seed=0)
    exs[1].answer, exs[1].is_noisy = "9", True
    ds = to_trl_dataset(exs)
    assert {"prompt", "images", "answer", "clean_answer", "is_noisy", "task", "id"} <= set(ds.column_names)
    row = ds[1]
    assert row["prompt"] == [{"role": "user", "content": exs[1].prompt}]
    assert (row["answer"], row["clean_answer"], row["is_noisy"]) == ("9", exs[1].clean_answer, True)
    assert len(row["images"]) == 1 and row["images"][0].size == exs[1].images[0].size
    assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(exs[1].images[0]))
    assert json.loads(ds[4]["meta"])["box"] == exs[4].meta["box"]
    assert ds["task"] == ["counting"] * 3 + ["grounding"] * 2

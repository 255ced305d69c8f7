"""Label noise: exact counts, seeding, and the per-task corruption rules of METHOD §4."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visent.data.loaders import load_examples
from visent.data.noise import Uncorruptable, disjoint_box, inject_label_noise, normalize_label, overlap_area
from visent.data.schema import Example

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "data"
PETS = (FIX / "visual_rft/classification/val_data/pets.txt").read_text().split()


def mixed(n: int) -> list[Example]:
    """n rows cycling through every task, each with a corruptible label (math rows only from n = 12 on:
    a lone math row has no other row's answer to take)."""
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(Example(f"g{i}", "grounding", "p", answer="[10, 10, 30, 20]", meta={"image_size": [200, 100]}))
        elif kind == 1:
            out.append(Example(f"c{i}", "classification", "p", answer=PETS[i % 37], meta={"classes": PETS}))
        elif kind == 2:
            out.append(Example(f"m{i}", "multiple_choice", "p", answer="B", meta={"choices": ["1", "2", "3", "4"]}))
        elif kind == 3 and n >= 12:
            out.append(Example(f"a{i}", "math", "p", answer=str(i)))
        elif kind in (3, 4):
            out.append(Example(f"n{i}", "counting", "p", answer=str(i % 5)))
        else:
            out.append(Example(f"d{i}", "detection", "p", answer=json.dumps([{"label": "cat", "bbox": [0, 0, 10, 10]}]),
                               meta={"image_size": [64, 64], "classes": ["cat", "dog"]}))
    return out


@pytest.mark.parametrize("n", [0, 1, 5, 7, 10, 33, 120])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.25, 0.5, 0.51, 1.0])
def test_exact_count(n, rate):
    rows = mixed(n)
    noisy, report = inject_label_noise(rows, rate, seed=3)
    expected = math.floor(rate * n + 0.5)
    assert report.n_target == report.n_corrupted == expected
    assert sum(ex.is_noisy for ex in noisy) == expected
    assert sum(ex.answer != ex.clean_answer for ex in noisy) == expected
    assert [ex.clean_answer for ex in noisy] == [ex.answer for ex in rows]
    assert [ex.id for ex in noisy] == [ex.id for ex in rows]
    assert all(ex.answer == ex.clean_answer for ex in noisy if not ex.is_noisy)
    assert sorted(ch.index for ch in report.changes) == [i for i, ex in enumerate(noisy) if ex.is_noisy]


def test_half_rounds_up():
    assert inject_label_noise(mixed(5), 0.5, seed=0)[1].n_corrupted == 3
    assert inject_label_noise(mixed(10), 0.25, seed=0)[1].n_corrupted == 3
    assert inject_label_noise(mixed(10), 0.24, seed=0)[1].n_corrupted == 2


def test_seed_reproducible_and_different_seeds_differ():
    rows = mixed(120)
    a, _ = inject_label_noise(rows, 0.5, seed=11)
    b, _ = inject_label_noise(rows, 0.5, seed=11)
    c, _ = inject_label_noise(rows, 0.5, seed=12)
    assert [(x.answer, x.is_noisy) for x in a] == [(x.answer, x.is_noisy) for x in b]
    assert [x.is_noisy for x in a] != [x.is_noisy for x in c]
    assert [x.answer for x in a] != [x.answer for x in c]


def test_input_untouched_and_renoising_starts_from_clean():
    rows = mixed(30)
    before = [(ex.answer, ex.is_noisy, dict(ex.meta)) for ex in rows]
    once, _ = inject_label_noise(rows, 1.0, seed=1)
    assert [(ex.answer, ex.is_noisy, dict(ex.meta)) for ex in rows] == before
    twice, report = inject_label_noise(once, 0.0, seed=1)
    assert report.n_corrupted == 0
    assert [ex.answer for ex in twice] == [ex.answer for ex in rows] and not any(ex.is_noisy for ex in twice)


def test_rate_validation():
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            inject_label_noise(mixed(4), bad, seed=0)
    with pytest.raises(ValueError, match="valid: mixed"):
        inject_label_noise(mixed(4), 0.5, seed=0, detection_mode="wiggle")


# ------------------------------------------------------------------------------------------ grounding


@st.composite
def box_in_image(draw, max_side=60, step=1.0):
    W = draw(st.integers(1, max_side))
    H = draw(st.integers(1, max_side))
    units_w, units_h = int(W / step), int(H / step)
    x1 = draw(st.integers(0, units_w - 1)) * step
    x2 = draw(st.integers(int(x1 / step) + 1, units_w)) * step
    y1 = draw(st.integers(0, units_h - 1)) * step
    y2 = draw(st.integers(int(y1 / step) + 1, units_h)) * step
    return (W, H), [x1, y1, x2, y2]


def brute_force(box, size):
    """Every integer offset of a same-size copy inside the image, with its overlap with ``box``."""
    W, H = size
    w, h = box[2] - box[0], box[3] - box[1]
    return [([x, y, x + w, y + h], overlap_area([x, y, x + w, y + h], box))
            for x in range(math.floor(W - w + 1e-9) + 1) for y in range(math.floor(H - h + 1e-9) + 1)]


@settings(max_examples=300, deadline=None)
@given(box_in_image(), st.integers(0, 2**32 - 1))
def test_grounding_noise_box_property(case, seed):
    size, box = case
    ex = Example("g", "grounding", "p", answer=json.dumps(box), meta={"image_size": list(size)})
    placements = brute_force(box, size)
    free = [p for p, a in placements if a == 0]
    others = [(p, a) for p, a in placements if p != box]
    try:
        noisy, report = inject_label_noise([ex], 1.0, seed=seed)
    except ValueError as err:
        # Only a box that fills the image (its copy can only be itself) is uncorruptable.
        assert not others and "fills the image" in str(err)
        return
    new = json.loads(noisy[0].answer)
    W, H = size
    assert new[2] - new[0] == pytest.approx(box[2] - box[0]) and new[3] - new[1] == pytest.approx(box[3] - box[1])
    assert 0 <= new[0] and 0 <= new[1] and new[2] <= W + 1e-9 and new[3] <= H + 1e-9
    if free:
        assert report.kinds == {"grounding:disjoint_box": 1}
        assert overlap_area(new, box) == 0
    else:
        assert report.kinds == {"grounding:min_overlap_fallback": 1}
        assert new != box and overlap_area(new, box) == pytest.approx(min(a for _, a in others))


@settings(max_examples=200, deadline=None)
@given(box_in_image(max_side=40, step=0.5), st.integers(0, 2**16))
def test_grounding_noise_fractional_boxes_never_overlap(case, seed):
    size, box = case
    try:
        new, kind = disjoint_box(box, size, random.Random(seed))
    except Uncorruptable:
        return
    if kind == "disjoint_box":
        assert overlap_area(new, box) <= 1e-9
        assert new[0] >= 0 and new[1] >= 0 and new[2] <= size[0] + 1e-9 and new[3] <= size[1] + 1e-9


def test_grounding_noise_covers_every_side():
    # A centred box: over many seeds, noisy boxes appear left of, right of, above and below it.
    ex = Example("g", "grounding", "p", answer="[40, 40, 60, 60]", meta={"image_size": [100, 100]})
    sides = set()
    for seed in range(200):
        new = json.loads(inject_label_noise([ex], 1.0, seed=seed)[0][0].answer)
        sides |= {s for s, cond in (("left", new[2] <= 40), ("right", new[0] >= 60), ("above", new[3] <= 40),
                                    ("below", new[1] >= 60)) if cond}
    assert sides == {"left", "right", "above", "below"}


def test_grounding_on_real_screenspot_rows():
    examples, _ = load_examples(FIX / "screenspot_v2/screenspot_web_v2.json", allow_missing_images=True)
    noisy, _ = inject_label_noise(examples, 1.0, seed=0)
    for ex in noisy:
        new, old = json.loads(ex.answer), json.loads(ex.clean_answer)
        assert overlap_area(new, old) == 0 and new[2] <= ex.meta["image_size"][0]


def test_grounding_without_image_size_is_reported():
    ex = [Example("g", "grounding", "p", answer="[1, 1, 5, 5]"), Example("h", "grounding", "p", answer="[1, 1, 5, 5]",
                                                                         meta={"image_size": [10, 10]})]
    noisy, report = inject_label_noise(ex, 0.5, seed=0)
    assert noisy[1].is_noisy and not noisy[0].is_noisy
    with pytest.raises(ValueError, match="image size unknown"):
        inject_label_noise(ex, 1.0, seed=0)
    _, report = inject_label_noise(ex, 1.0, seed=0, allow_shortfall=True)
    assert report.n_corrupted == 1 and report.shortfall == 1
    assert "image size unknown" in " ".join(report.uncorruptable)


# ------------------------------------------------------------------------------------ classification


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 36), st.integers(0, 2**32 - 1))
def test_classification_never_the_clean_class(label, seed):
    rows = [Example(str(i), "classification", "p", answer=PETS[(label + i) % 37], meta={"classes": PETS})
            for i in range(5)]
    noisy, _ = inject_label_noise(rows, 1.0, seed=seed)
    for ex in noisy:
        assert ex.answer in PETS and normalize_label(ex.answer) != normalize_label(ex.clean_answer)


def test_classification_class_set_and_name_variants():
    rows = [Example("0", "classification", "p", answer="Great Pyrenees"),
            Example("1", "classification", "p", answer="great_pyrenees"),
            Example("2", "classification", "p", answer="pug")]
    for seed in range(30):
        noisy, _ = inject_label_noise(rows, 1.0, seed=seed, allow_shortfall=True)
        for ex in noisy:
            if ex.is_noisy:
                assert normalize_label(ex.answer) != normalize_label(ex.clean_answer)
    noisy, _ = inject_label_noise(rows[:1], 1.0, seed=0, classes=["great pyrenees", "beagle"])
    assert noisy[0].answer == "beagle"
    with pytest.raises(ValueError, match="no other class"):
        inject_label_noise(rows[:1], 1.0, seed=0)


def test_classification_on_real_pets_rows():
    examples, _ = load_examples(FIX / "visual_rft/derived/pets_val_decoded.jsonl", allow_missing_images=True)
    noisy, report = inject_label_noise(examples, 1.0, seed=5)
    assert report.kinds == {"classification:other_class": 4}
    assert all(ex.answer in PETS and ex.answer != ex.clean_answer for ex in noisy)


# ------------------------------------------------------------------------------- math, options, detection


def test_multiple_choice_other_valid_letter():
    rows = [Example(str(i), "multiple_choice", "p", answer="ABC"[i % 3], meta={"choices": ["x", "y", "z"]})
            for i in range(30)]
    noisy, report = inject_label_noise(rows, 1.0, seed=2)
    assert all(ex.answer in "ABC" and ex.answer != ex.clean_answer for ex in noisy)
    assert report.kinds == {"multiple_choice:other_option": 30}
    one = [Example("solo", "multiple_choice", "p", answer="A", meta={"choices": ["only"]})]
    with pytest.raises(ValueError, match="single option"):
        inject_label_noise(one, 1.0, seed=0)


def test_math_takes_another_rows_different_answer():
    rows = [Example(str(i), "math", "p", answer=a) for i, a in enumerate(["1", "1", "2", " 1 ", "3"])]
    for seed in range(20):
        noisy, _ = inject_label_noise(rows, 1.0, seed=seed)
        for ex in noisy:
            assert ex.answer in {"1", "2", "3"} and normalize_label(ex.answer) != normalize_label(ex.clean_answer)
    same = [Example(str(i), "math", "p", answer="7") for i in range(3)]
    with pytest.raises(ValueError, match="same answer"):
        inject_label_noise(same, 0.5, seed=0)


def test_math_on_real_mathvista_rows_keeps_tasks_apart():
    examples, _ = load_examples(FIX / "mathvista/data/testmini.json", allow_missing_images=True)
    noisy, _ = inject_label_noise(examples, 1.0, seed=0)
    for ex in noisy:
        if ex.task == "multiple_choice":
            assert ex.answer in "ABCD"[: len(ex.meta["choices"])] and ex.answer != ex.clean_answer
        else:  # drawn from the other free-form row, never from an option letter
            assert ex.answer in {"1.2", "[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6]"} - {ex.clean_answer}


def test_counting_falls_back_to_offset():
    rows = [Example(str(i), "counting", "p", answer="0") for i in range(4)]
    noisy, report = inject_label_noise(rows, 1.0, seed=0)
    assert [ex.answer for ex in noisy] == ["1"] * 4 and report.kinds == {"counting:count_offset": 4}


def test_detection_relabel_and_shift():
    objs = [{"label": "cat", "bbox": [0, 0, 10, 10]}, {"label": "dog", "bbox": [20, 20, 40, 30]}]
    rows = [Example(str(i), "detection", "p", answer=json.dumps(objs), meta={"image_size": [64, 64]})
            for i in range(6)]
    relabelled, rep = inject_label_noise(rows, 1.0, seed=0, detection_mode="relabel", classes=["cat", "dog", "cow"])
    for ex in relabelled:
        new = json.loads(ex.answer)
        assert [o["bbox"] for o in new] == [o["bbox"] for o in objs]
        assert all(n["label"] != o["label"] and n["label"] in {"cat", "dog", "cow"} for n, o in zip(new, objs))
    shifted, rep = inject_label_noise(rows, 1.0, seed=0, detection_mode="shift")
    assert rep.kinds == {"detection:shift": 6}
    for ex in shifted:
        new = json.loads(ex.answer)
        assert [n["label"] for n in new] == ["cat", "dog"]
        assert all(overlap_area(n["bbox"], o["bbox"]) == 0 for n, o in zip(new, objs))


def test_report_summary_lists_changes():
    _, report = inject_label_noise(mixed(12), 0.5, seed=4)
    text = report.summary(max_rows=2)
    assert f"corrupted {report.n_corrupted} of 12" in text and "... and 4 more" in text
    first = report.changes[0]
    assert f"[{first.index}] {first.id}" in text
    assert json.loads(json.dumps(report.to_dict()))["n_corrupted"] == 6

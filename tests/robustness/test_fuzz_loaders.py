"""Fuzzing every loader in ``visent.data.loaders.FORMATS`` with hypothesis.

Each format gets a directory in its published layout holding one well-formed row plus fuzzed rows:
fields deleted or replaced by random JSON (unicode, huge and non-finite numbers, nested containers,
malformed JSON box strings), image references to truncated PNG/JPEG files, random bytes, empty files,
absent files, and raw lines that are not JSON at all (deep nesting, 5000-digit numbers, invalid UTF-8).

Contract checked:
- lenient mode (default) never raises for a bad *row*: every row read is either loaded or skipped and
  counted (``rows_seen == loaded + skipped``), and the well-formed row is always loaded;
- strict mode raises nothing but :class:`DataError`, and its message names the file and the row;
- the streaming loader (``visent.data.table.load_table``) keeps and skips the same rows for the same reasons;
- every loaded example is well-formed (string id, prompt and non-empty answer; images are paths to files
  that decode, or PIL images).
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visent.data.errors import DataError
from visent.data.loaders import FORMATS, load_examples
from visent.data.table import load_table

# ------------------------------------------------------------------------------------------- images


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_images(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    png, jpg = _png(), _jpeg()
    files = {
        "good.png": png,
        "good.jpg": jpg,
        "cut.png": png[: rng.randint(8, len(png) - 1)],
        "cut.jpg": jpg[: rng.randint(4, len(jpg) - 200)],
        "noise.png": bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
        "header_only.png": png[:33],
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "adir.png").mkdir()


IMAGE_REFS = [
    "good.png",
    "good.jpg",
    "cut.png",
    "cut.jpg",
    "noise.png",
    "header_only.png",
    "empty.jpg",
    "adir.png",
    "missing.png",
    "",
    "../good.png",
    "x" * 400 + ".png",
    "bad\x00name.png",
    "/nonexistent/abs/good.png",
]
image_refs = st.one_of(
    st.sampled_from(IMAGE_REFS),
    st.lists(st.sampled_from(IMAGE_REFS), max_size=3),
    st.fixed_dictionaries({"path": st.sampled_from(IMAGE_REFS)}),
    st.fixed_dictionaries({"bytes": st.sampled_from(["", "\x89PNG\r\n", None]), "path": st.none()}),
)

# ------------------------------------------------------------------------------------------- values

FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    "\\boxed{",
    "[1, 2, 3",
    '{"bbox": [',
    "[1e999, 0, 2, 2]",
    "NaN",
    "<image1>",
    "A",
    "None",
    "\ud7ff",
    "é中文",
    "\x00",
    "\n",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**400, -(10**400), 2**64, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
KEEP, DROP = object(), object()


def mutated(template: dict, image_keys: tuple[str, ...]):
    """A strategy of rows: each field kept, dropped, or replaced (image fields by image references)."""
    fields = {}
    for key in template:
        options = [st.just(KEEP), st.just(DROP), json_values]
        if key in image_keys:
            options.append(image_refs)
        fields[key] = st.one_of(*options)

    def build(choices: dict, extra: dict) -> dict:
        row = {}
        for key, value in template.items():
            choice = choices[key]
            if choice is KEEP:
                row[key] = value
            elif choice is not DROP:
                row[key] = choice
        row.update(extra)
        return row

    return st.builds(build, st.fixed_dictionaries(fields), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


# Lines a jsonl file may hold that are not rows at all.
RAW_LINES = [
    b"{" * 3000,
    b"[" * 3000 + b"]" * 3000,
    b"9" * 5000,
    b'{"a": ' + b"1" * 5000 + b"}",
    b"\xff\xfe\xfa not utf-8",
    b"[1, 2]",
    b"null",
    b"NaN",
    b'{"unterminated": "',
]

# ------------------------------------------------------------------------------------------- formats

# name -> (template row, image fields, layout, extra loader kwargs)
TEMPLATES: dict[str, tuple[dict, tuple[str, ...], str, dict]] = {
    "geometry3k": ({"images": ["good.png"], "problem": "<image>Find x.", "answer": "120"}, ("images",), "jsonl", {}),
    "mathvision": (
        {"id": "16", "question": "How many?\n<image1>", "options": ["A", "B", "C"], "answer": "B",
         "solution": None, "level": 2, "subject": "arithmetic", "image": "good.jpg"},
        ("image",), "jsonl", {}),
    "mathvista": (
        {"question": "Which angle?", "image": "good.png", "choices": ["135°", "140°"], "unit": None,
         "precision": None, "answer": "140°", "question_type": "multi_choice", "answer_type": "text", "pid": "3",
         "metadata": {"img_width": 40, "img_height": 30, "source": "x"}},
        ("image",), "json_dict", {}),
    "mmk12": ({"id": "k1", "question": "Area?", "answer": "18.", "image_path": "good.png"}, ("image_path",), "json",
              {}),
    "r1v_geoqa": ({"image_path": "good.png", "question": "Angle CED?", "ground_truth": "140°"}, ("image_path",),
                  "jsonl", {}),
    "lmm_r1": (
        {"question": "Which?", "answer": "$\\boxed{60}$",
         "message": json.dumps([{"role": "system", "content": "think"},
                                {"role": "user", "content": [{"type": "text", "text": "Which?\nA. a\nB. b"},
                                                             {"type": "image", "image": "good.jpg"}]}])},
        ("message",), "jsonl", {}),
    "screenspot_pro": (
        {"img_filename": "good.png", "bbox": [2, 3, 20, 25], "instruction": "click it", "img_size": [40, 30],
         "platform": "web", "ui_type": "text", "group": "web"},
        ("img_filename",), "json", {}),
    "seeclick": ({"img_filename": "good.png", "bbox": [1, 1, 10, 12], "instruction": "click", "data_type": "icon"},
                 ("img_filename",), "json", {}),
    "ui_r1": ({"image": "good.png", "gt": {"action_type": "click", "x": 10, "y": 20}, "task": "Tap."}, ("image",),
              "json", {}),
    "visual_rft_cls": ({"image": "good.jpg", "label": 1, "class_name": "beagle"}, ("image",), "visual_rft", {}),
    "r1v_counting": ({"image_path": "good.png", "question": "How many?", "ground_truth": 4}, ("image_path",), "jsonl",
                     {}),
    "conversations": (
        {"id": 7, "image": ["good.png", "good.jpg"],
         "conversations": [{"from": "human", "value": "<image><image>How many in total?"},
                           {"from": "gpt", "value": "<answer>3</answer>"}]},
        ("image",), "jsonl", {}),
    "messages": (
        {"messages": [{"role": "system", "content": "think"},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
                      {"role": "assistant", "content": "3"}],
         "images": ["good.png"]},
        ("images",), "jsonl", {}),
    "generic": (
        {"q": "Where?", "a": "[1, 2, 9, 9]", "img": "good.png", "meta": {"size": [40, 30]}},
        ("img",), "jsonl",
        {"mapping": "prompt=q,answer=a,images=img,image_size=meta.size", "task": "grounding"}),
    "geometry3k_raw": (
        {"problem_text": "Find Q.", "choices": ["30", "45", "60", "120"], "answer": "D", "id": 17},
        ("image",), "geometry3k_raw", {}),
}
GENERIC_VARIANTS = [
    {"mapping": "prompt=q,answer=a,images=img", "task": "detection"},
    {"mapping": "prompt=q,answer=a,images=img,choices=c"},
    {"mapping": "prompt=q,answer=a,image=img,id=meta.id"},
]


def test_every_format_has_a_fuzz_template():
    assert set(TEMPLATES) == set(FORMATS), "a new format needs a template here"


def write_dataset(root: Path, name: str, good: dict, rows: list[dict], raw_lines: list[bytes], seed: int) -> Path:
    """Write ``[good] + rows`` in the layout of ``name``; return the path to load."""
    layout = TEMPLATES[name][2]
    root.mkdir(parents=True, exist_ok=True)
    write_images(root, seed)
    all_rows = [good, *rows]
    dumps = lambda r: json.dumps(r, ensure_ascii=False)
    if layout in ("jsonl", "visual_rft"):
        path = root / ("pets_val_decoded.jsonl" if layout == "visual_rft" else "data.jsonl")
        lines = [dumps(r).encode("utf-8", "surrogatepass") for r in all_rows]
        lines[1:1] = raw_lines
        path.write_bytes(b"\n".join(lines) + b"\n")
        if layout == "visual_rft":
            (root / "pets.txt").write_text("abyssinian\nbeagle\nboxer\n")
        return path
    if layout == "json":
        path = root / "data.json"
        path.write_bytes(dumps(all_rows).encode("utf-8", "surrogatepass"))
        return path
    if layout == "json_dict":
        path = root / "data.json"
        data = {str(i): r for i, r in enumerate(all_rows)}
        path.write_bytes(dumps(data).encode("utf-8", "surrogatepass"))
        return path
    assert layout == "geometry3k_raw"
    images = ["good.png", "cut.png", "noise.png", "empty.jpg", None]
    for i, row in enumerate(all_rows):
        d = root / "problems" / str(i)
        d.mkdir(parents=True)
        (d / "data.json").write_bytes(dumps(row).encode("utf-8", "surrogatepass"))
        pick = images[0] if i == 0 else images[(i + seed) % len(images)]
        if pick is not None:
            (d / "img_diagram.png").write_bytes((root / pick).read_bytes())
    for j, raw in enumerate(raw_lines):
        d = root / "problems" / f"raw{j}"
        d.mkdir(parents=True)
        (d / "data.json").write_bytes(raw)
    return root / "problems"


def check_example(ex) -> None:
    assert isinstance(ex.id, str) and isinstance(ex.prompt, str)
    assert isinstance(ex.answer, str) and ex.answer.strip(), ex
    for im in ex.images:
        if isinstance(im, (str, os.PathLike)):
            with Image.open(im) as opened:
                opened.load()  # decode-checked at load time, so it must decode now
        else:
            assert hasattr(im, "size")


def run_both_modes(path: Path, kwargs: dict, expect_template: bool) -> None:
    """Lenient then strict load of ``path``; checks the contract in the module docstring."""
    try:
        examples, report = load_examples(path, **kwargs)
    except DataError as err:
        # Only a file that cannot be split into rows at all may fail a lenient load, and it says where.
        assert err.reason != "config" and err.where is not None, err
        assert Path(err.where.file).name in str(err)
        examples = None
    if examples is not None:
        assert report.rows_seen == report.loaded + report.skipped_total, report.summary()
        assert report.loaded == len(examples)
        for ex in examples:
            check_example(ex)
        if expect_template:  # the untouched first row always survives its neighbours
            assert examples and examples[0].meta.get("source_row") in (0, 1, "0"), report.summary()
        # The streaming loader (same parsers, images kept encoded) at the same image check: same rows kept,
        # same rows skipped for the same reasons.
        table = load_table(path, image_check="decode", cache_dir=path.parent / ".cache", **kwargs)
        assert [ex.id for ex in table] == [ex.id for ex in examples]
        assert [ex.answer for ex in table] == [ex.answer for ex in examples]
        assert dict(table.report.skipped) == dict(report.skipped), (table.report.summary(), report.summary())
    try:
        strict_examples, _ = load_examples(path, strict=True, **kwargs)
    except DataError as err:
        assert err.where is not None and Path(err.where.file).name in str(err), str(err)
    else:
        assert examples is not None and len(strict_examples) == len(examples)


def fuzz_one(name: str, data, root: Path, n_rows: int) -> None:
    template, image_keys, layout, kwargs = TEMPLATES[name]
    base = True
    if name == "generic":
        kwargs = data.draw(st.sampled_from([kwargs, *GENERIC_VARIANTS]))
        base = kwargs is TEMPLATES[name][3]
    rows = data.draw(st.lists(mutated(template, image_keys), max_size=n_rows))
    raw = data.draw(st.lists(st.sampled_from(RAW_LINES), max_size=2)) if layout != "json" else []
    seed = data.draw(st.integers(0, 10**6))
    path = write_dataset(root, name, template, rows, raw, seed)
    run_both_modes(path, dict(kwargs, format=name), expect_template=base)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_loader_never_raises_on_bad_rows(name, data, tmp_path_factory):
    fuzz_one(name, data, tmp_path_factory.mktemp(name), n_rows=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TEMPLATES))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_loader_never_raises_on_bad_rows_long(name, data, tmp_path_factory):
    fuzz_one(name, data, tmp_path_factory.mktemp(name), n_rows=12)


def test_an_unexpected_parser_exception_becomes_a_row_error(tmp_path, monkeypatch):
    """The loader's last line of defence, independent of how careful each parser is: whatever a parser
    raises on an odd value is reported as a bad row naming file and row (skipped in lenient mode)."""
    from dataclasses import replace

    from visent.data import loaders

    def fragile(row, ctx):
        return row["question"].strip()  # AttributeError on a number, KeyError when absent

    monkeypatch.setitem(loaders.FORMATS, "fragile", replace(FORMATS["mmk12"], name="fragile", parse=fragile))
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": 5}\n{"other": 1}\n')
    examples, report = load_examples(path, format="fragile")
    assert examples == [] and report.skipped_total == 2 and report.rows_seen == 2
    assert "line 1" in report.samples["bad_value"][0] and "AttributeError" in report.samples["bad_value"][0]
    with pytest.raises(DataError) as err:
        load_examples(path, format="fragile", strict=True)
    assert "rows.jsonl line 1" in str(err.value) and err.value.where.row == 1


@pytest.mark.parametrize("raw", RAW_LINES, ids=range(len(RAW_LINES)))
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_each_unreadable_line_or_document_is_reported_not_raised(tmp_path, raw, suffix):
    (tmp_path / "good.png").write_bytes(_png())
    good = json.dumps({"id": "k1", "question": "Area?", "answer": "18", "image_path": "good.png"}).encode()
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":  # one bad line is one bad row; the good line still loads
        path.write_bytes(good + b"\n" + raw + b"\n")
        examples, report = load_examples(path, format="mmk12")
        assert len(examples) == 1 and report.skipped_total == 1, report.summary()
    else:  # a broken document cannot be split into rows: one DataError naming the file, in both modes
        path.write_bytes(raw)
        try:
            examples, report = load_examples(path, format="mmk12")
        except DataError as err:
            assert err.reason == "malformed_json" and "data.json" in str(err)
        else:
            assert examples == [] and report.rows_seen == report.skipped_total

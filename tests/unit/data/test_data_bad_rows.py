"""Synthetic corrupt inputs: strict mode raises naming file, row and field; lenient mode skips and counts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from visent.data.errors import DataError
from visent.data.loaders import load_examples


def png_bytes(size=(40, 30), color=(10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    # Noise-like content so the JPEG has real scan data to cut.
    im = Image.effect_noise(size, 60).convert("RGB")
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def k12_dir(tmp_path: Path) -> Path:
    """A K12-style json: good row, truncated png, truncated jpeg, missing answer, missing image file."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "good.png").write_bytes(png_bytes())
    data = png_bytes()
    (tmp_path / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    jdata = jpeg_bytes()
    (tmp_path / "images" / "cut.jpg").write_bytes(jdata[: len(jdata) // 2])
    rows = [
        {"id": "a", "question": "q1", "answer": "1", "image_path": "images/good.png"},
        {"id": "b", "question": "q2", "answer": "2", "image_path": "images/cut.png"},
        {"id": "c", "question": "q3", "answer": "3", "image_path": "images/cut.jpg"},
        {"id": "d", "question": "q4", "answer": "", "image_path": "images/good.png"},
        {"id": "e", "question": "q5", "answer": "5", "image_path": "images/nothere.png"},
    ]
    (tmp_path / "k12.json").write_text(json.dumps(rows))
    return tmp_path


def test_lenient_counts_each_reason(k12_dir, caplog):
    examples, report = load_examples(k12_dir / "k12.json", format="mmk12")
    assert [ex.id for ex in examples] == ["a"]
    assert report.rows_seen == 5 and report.loaded == 1
    assert report.skipped == {"corrupt_image": 2, "missing_answer": 1, "missing_image": 1}
    assert "row 1" in report.samples["corrupt_image"][0] and "cut.png" in report.samples["corrupt_image"][0]
    assert "row 3" in report.samples["missing_answer"][0] and "'answer'" in report.samples["missing_answer"][0]
    summary = report.summary()
    assert "skipped 2 x corrupt_image" in summary and "loaded: 1" in summary
    assert any("skipped 4 of 5 rows" in r.getMessage() for r in caplog.records)  # never silent


@pytest.mark.parametrize("row_index,field,reason", [(1, "images", "corrupt_image"), (2, "images", "corrupt_image"),
                                                    (3, "answer", "missing_answer"),
                                                    (4, "image_path", "missing_image")])
def test_strict_raises_on_each_bad_row(k12_dir, row_index, field, reason):
    rows = json.loads((k12_dir / "k12.json").read_text())
    (k12_dir / "one.json").write_text(json.dumps([rows[0], rows[row_index]]))
    with pytest.raises(DataError) as err:
        load_examples(k12_dir / "one.json", format="mmk12", strict=True)
    e = err.value
    assert e.reason == reason and e.field == field and e.where.row == 1
    assert "one.json row 1" in str(e) and repr(field) in str(e)


def test_image_check_exists_does_not_decode(k12_dir):
    examples, report = load_examples(k12_dir / "k12.json", format="mmk12", image_check="exists")
    assert report.skipped == {"missing_answer": 1, "missing_image": 1}
    assert [ex.id for ex in examples] == ["a", "b", "c"]


def test_bad_json_line(tmp_path):
    good = {"image_path": "x.png", "question": "How many?", "ground_truth": 3}
    (tmp_path / "x.png").write_bytes(png_bytes())
    text = json.dumps(good) + "\n" + '{"image_path": "x.png", "question": "trunc' + "\n" + "[1, 2]\n" + json.dumps(good)
    (tmp_path / "c.jsonl").write_text(text + "\n")
    examples, report = load_examples(tmp_path / "c.jsonl", format="r1v_counting")
    assert len(examples) == 2 and report.skipped == {"malformed_json": 2}
    assert [ex.meta["source_row"] for ex in examples] == [1, 4]
    with pytest.raises(DataError) as err:
        load_examples(tmp_path / "c.jsonl", format="r1v_counting", strict=True)
    assert "c.jsonl line 2" in str(err.value) and err.value.reason == "malformed_json"


def test_broken_json_document_fails_in_both_modes(tmp_path):
    (tmp_path / "d.json").write_text('[{"img_filename": "a.png", "bbox": [1, 2, 3')
    for strict in (False, True):
        with pytest.raises(DataError, match="not valid JSON"):
            load_examples(tmp_path / "d.json", format="screenspot_pro", strict=strict)


def screenspot_rows(tmp_path: Path) -> Path:
    (tmp_path / "s.png").write_bytes(png_bytes((100, 80)))
    rows = [
        {"img_filename": "s.png", "bbox": [10, 10, 50, 40], "instruction": "ok", "img_size": [100, 80]},
        {"img_filename": "s.png", "bbox": [60, 10, 120, 40], "instruction": "too wide", "img_size": [100, 80]},
        {"img_filename": "s.png", "bbox": [50, 10, 10, 40], "instruction": "flipped", "img_size": [100, 80]},
        {"img_filename": "s.png", "bbox": [1, 2, 3], "instruction": "short", "img_size": [100, 80]},
        {"img_filename": "s.png", "instruction": "no box", "img_size": [100, 80]},
    ]
    (tmp_path / "ss.json").write_text(json.dumps(rows))
    return tmp_path / "ss.json"


def test_grounding_box_checks(tmp_path):
    path = screenspot_rows(tmp_path)
    examples, report = load_examples(path)
    assert [ex.prompt for ex in examples] == ["ok"]
    assert report.skipped == {"box_outside_image": 1, "invalid_box": 2, "missing_answer": 1}
    with pytest.raises(DataError) as err:
        load_examples(path, strict=True)
    assert err.value.reason == "box_outside_image" and "ss.json row 1" in str(err.value)
    assert "'bbox'" in str(err.value) and "100x80" in str(err.value)


def test_seeclick_box_outside_real_screenshot(tmp_path):
    (tmp_path / "s.png").write_bytes(png_bytes((100, 80)))
    rows = [{"img_filename": "s.png", "bbox": [90, 70, 20, 5], "instruction": "x", "data_type": "icon",
             "data_source": "synthetic"}]
    (tmp_path / "sc.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"\[90.0, 70.0, 110.0, 75.0\] lies outside the 100x80 image"):
        load_examples(tmp_path / "sc.json", strict=True)


def test_shared_corrupt_screenshot_names_each_row(tmp_path):
    data = png_bytes((100, 80))
    (tmp_path / "s.png").write_bytes(data[:40])
    rows = [{"img_filename": "s.png", "bbox": [1, 1, 5, 5], "instruction": str(i), "img_size": [100, 80]}
            for i in range(3)]
    (tmp_path / "ss.json").write_text(json.dumps(rows))
    examples, report = load_examples(tmp_path / "ss.json")
    assert examples == [] and report.skipped == {"corrupt_image": 3}
    assert [s.split(",")[0].rsplit(" ", 1)[-1] for s in report.samples["corrupt_image"]] == ["0", "1", "2"]


def test_parquet_with_corrupt_image_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good = png_bytes()
    table = pa.Table.from_pylist([
        {"images": [{"bytes": good, "path": None}], "problem": "<image>p1", "answer": "1"},
        {"images": [{"bytes": good[:30], "path": None}], "problem": "<image>p2", "answer": "2"},
        {"images": [{"bytes": good, "path": None}], "problem": "<image>p3", "answer": None},
    ])
    pq.write_table(table, tmp_path / "g.parquet")
    examples, report = load_examples(tmp_path / "g.parquet")
    assert [ex.prompt for ex in examples] == ["p1"]
    assert report.skipped == {"corrupt_image": 1, "missing_answer": 1}
    assert "g.parquet row 1" in report.samples["corrupt_image"][0]


def test_limit_and_config_errors(k12_dir):
    examples, report = load_examples(k12_dir / "k12.json", format="mmk12", limit=2)
    assert report.rows_seen == 2 and len(examples) == 1
    with pytest.raises(DataError, match="valid formats"):
        load_examples(k12_dir / "k12.json", format="k12")
    with pytest.raises(DataError, match="needs a mapping"):
        load_examples(k12_dir / "k12.json", format="generic")
    # A mapping next to a known format would be ignored by that format's reader: refused, not dropped.
    with pytest.raises(DataError, match="generic format only; --format mmk12"):
        load_examples(k12_dir / "k12.json", format="mmk12", mapping="prompt=question,answer=answer")
    with pytest.raises(DataError, match="field=column"):
        load_examples(k12_dir / "k12.json", mapping="prompt")
    with pytest.raises(DataError, match="unknown task"):
        load_examples(k12_dir / "k12.json", mapping="prompt=question,answer=answer", task="poetry")
    with pytest.raises(DataError, match="no such file"):
        load_examples(k12_dir / "nothere.jsonl")


def test_hub_rows_go_through_the_same_parser(monkeypatch):
    datasets = pytest.importorskip("datasets")
    img = Image.new("RGB", (30, 20))
    rows = [{"images": [img], "problem": "<image>Find x.", "answer": "3"},
            {"images": [img], "problem": "<image>Find y.", "answer": ""}]
    calls = []

    def fake_load_dataset(repo_id, split=None):
        calls.append((repo_id, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples, report = load_examples("hiyouga/geometry3k", split="train")
    assert calls == [("hiyouga/geometry3k", "train")]
    assert report.format == "geometry3k" and report.source == "hf:hiyouga/geometry3k[train]"
    assert examples[0].images[0] is img and examples[0].meta["image_size"] == [30, 20]
    assert report.skipped == {"missing_answer": 1} and "hf:hiyouga/geometry3k[train] row 1" in str(report.samples)


def test_hub_failure_is_a_clear_error_offline():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = "from visent.data.cli import main; raise SystemExit(main(['inspect', 'nobody-here/no-such-dataset']))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "could not load Hub dataset 'nobody-here/no-such-dataset'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_empty_class_name_is_a_missing_label(tmp_path):
    # Found by the loader fuzz test: class_name "" produced an Example whose answer was "".
    (tmp_path / "x.png").write_bytes(png_bytes())
    rows = [
        {"image": "x.png", "label": 0, "class_name": "beagle"},
        {"image": "x.png", "label": 1, "class_name": "  "},
    ]
    (tmp_path / "pets_val_decoded.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, report = load_examples(tmp_path / "pets_val_decoded.jsonl", format="visual_rft_cls")
    assert [ex.answer for ex in examples] == ["beagle"] and report.skipped == {"missing_answer": 1}
    with pytest.raises(DataError) as err:
        load_examples(tmp_path / "pets_val_decoded.jsonl", format="visual_rft_cls", strict=True)
    assert "line 2" in str(err.value) and "class_name" in str(err.value)

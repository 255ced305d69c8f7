"""Loaders on rows copied from the published datasets (tests/fixtures/data, see its SOURCES.md).

Expected values are read from the fixture files themselves (or stated from the published row), so a
loader that drops, reorders or mangles fields fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from visent.data.errors import DataError
from visent.data.loaders import FORMATS, detect_format, get_format, load_examples

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def by_id(examples):
    return {ex.id: ex for ex in examples}


def test_geometry3k_raw_is_multiple_choice_with_letter_answer():
    examples, report = load_examples(FIX / "geometry3k" / "intergps_data_examples")
    assert report.format == "geometry3k_raw" and report.skipped_total == 0
    assert [ex.id for ex in examples] == ["17", "18"]
    for ex in examples:
        raw = json.loads((FIX / "geometry3k" / "intergps_data_examples" / ex.id / "data.json").read_text())
        assert ex.task == "multiple_choice"
        assert ex.answer == raw["answer"]
        assert ex.meta["choices"] == raw["choices"]
        assert ex.meta["answer_text"] == raw["choices"]["ABCD".index(raw["answer"])]
        assert ex.prompt.startswith(raw["annotat_text"])
        for letter, choice in zip("ABCD", raw["choices"]):
            assert f"{letter}. {choice}" in ex.prompt
        with Image.open(ex.images[0]) as im:
            assert ex.meta["image_size"] == [im.width, im.height] == [raw["img_width"], raw["img_height"]]
        assert ex.meta["source_file"].endswith(f"{ex.id}/data.json")


def test_geometry3k_hf_form_matches_the_raw_conversion_rule():
    hf, report = load_examples(FIX / "geometry3k" / "derived" / "geometry3k_hiyouga_format.jsonl")
    raw, _ = load_examples(FIX / "geometry3k" / "intergps_data_examples")
    assert report.format == "geometry3k"
    # hiyouga's rule: answer = choices[letter]; problem = "<image>" + annotat_text (we strip the marker).
    assert [ex.answer for ex in hf] == [ex.meta["answer_text"] for ex in raw] == ["120", "22"]
    assert all(ex.task == "math" and "<image>" not in ex.prompt for ex in hf)
    assert [Path(ex.images[0]).resolve() for ex in hf] == [Path(ex.images[0]).resolve() for ex in raw]
    assert [ex.meta["source_row"] for ex in hf] == [1, 2]


def test_geometry3k_hf_parquet_with_embedded_image_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIX / "geometry3k/derived/geometry3k_hiyouga_format.jsonl").open()]
    base = FIX / "geometry3k" / "derived"
    table = pa.Table.from_pylist([
        {"images": [{"bytes": (base / r["images"][0]).read_bytes(), "path": "img_diagram.png"}],
         "problem": r["problem"], "answer": r["answer"]} for r in rows])
    pq.write_table(table, tmp_path / "train-00000.parquet")
    examples, report = load_examples(tmp_path / "train-00000.parquet")
    assert report.format == "geometry3k" and report.loaded == 2
    with Image.open(base / rows[0]["images"][0]) as ref:
        assert examples[0].images[0].size == ref.size
        assert examples[0].meta["image_size"] == list(ref.size)
    assert examples[1].answer == "22"


def test_mathvision_free_form_multiple_choice_and_missing_image():
    examples, report = load_examples(FIX / "mathvision" / "data" / "testmini.jsonl")
    rows = {r["id"]: r for r in map(json.loads, (FIX / "mathvision/data/testmini.jsonl").open())}
    got = by_id(examples)
    assert set(got) == {"16", "38", "90"}
    assert report.skipped == {"missing_image": 1}
    assert "line 4" in report.samples["missing_image"][0] and "'image'" in report.samples["missing_image"][0]
    assert got["16"].task == "math" and got["16"].answer == rows["16"]["answer"] == "11"
    mc = got["90"]
    assert mc.task == "multiple_choice" and mc.answer == rows["90"]["answer"]
    assert mc.meta["choices"] == rows["90"]["options"]
    assert "<image1>" not in mc.prompt and "E. " + rows["90"]["options"][4] in mc.prompt
    assert Path(mc.images[0]).name == "90.jpg"


def test_mathvision_strict_names_file_row_field():
    with pytest.raises(DataError) as err:
        load_examples(FIX / "mathvision" / "data" / "testmini.jsonl", strict=True)
    msg = str(err.value)
    assert "testmini.jsonl line 4" in msg and "'image'" in msg and "95.jpg" in msg


def test_mathvista_choices_become_letters_and_text_only_option():
    path = FIX / "mathvista" / "data" / "testmini.json"
    examples, report = load_examples(path)
    assert report.loaded == 0 and report.skipped == {"missing_image": 4}  # no images in the repo
    examples, report = load_examples(path, allow_missing_images=True)
    got = by_id(examples)
    assert report.loaded == 4 and report.notes
    raw = json.loads(path.read_text())
    assert got["3"].task == "multiple_choice"
    assert got["3"].answer == "ABCD"[raw["3"]["choices"].index(raw["3"]["answer"])] == "C"
    assert got["3"].meta["answer_text"] == "145°"
    assert got["1"].task == "math" and got["1"].answer == "1.2" and got["1"].meta["precision"] == 1
    assert got["1"].meta["image_size"] == [raw["1"]["metadata"]["img_width"], raw["1"]["metadata"]["img_height"]]
    assert got["225"].answer == raw["225"]["answer"]
    assert all(ex.images == [] and ex.meta["missing_images"] for ex in examples)


def test_mmk12():
    examples, report = load_examples(FIX / "mmk12" / "k12.json")
    raw = json.loads((FIX / "mmk12" / "k12.json").read_text())
    assert report.format == "mmk12" and report.skipped == {"missing_image": 1}
    assert [ex.id for ex in examples] == [r["id"] for r in raw[:3]]
    assert [ex.answer for ex in examples] == [r["answer"] for r in raw[:3]]
    assert "row 3" in report.samples["missing_image"][0]


@pytest.mark.parametrize("name,fmt,task,answers", [
    ("geoqa_test_prompts.jsonl", "r1v_geoqa", "math", ["140°", "65°", "55°"]),
    ("superclevr_test200_counting_problems.jsonl", "r1v_counting", "counting", ["4", "9", "10"]),
])
def test_r1v(name, fmt, task, answers):
    examples, report = load_examples(FIX / "r1v" / name, allow_missing_images=True)
    assert report.format == fmt
    assert [ex.answer for ex in examples] == answers and {ex.task for ex in examples} == {task}


def test_r1v_counting_with_image_root(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "images" / "superCLEVR_new_025000.png")
    examples, report = load_examples(FIX / "r1v" / "superclevr_test200_counting_problems.jsonl",
                                     image_root=tmp_path, limit=1)
    assert report.loaded == 1 and examples[0].meta["image_size"] == [32, 24]


def test_screenspot_pro_schema_keeps_pixel_boxes():
    for group in ("desktop", "web"):
        path = FIX / "screenspot_v2" / f"screenspot_{group}_v2.json"
        raw = json.loads(path.read_text())
        examples, report = load_examples(path, allow_missing_images=True)
        assert report.format == "screenspot_pro" and report.loaded == len(raw)
        for ex, r in zip(examples, raw):
            assert ex.task == "grounding" and json.loads(ex.answer) == r["bbox"]
            assert ex.meta["image_size"] == r["img_size"] and ex.prompt == r["instruction"]
            assert ex.meta["coord_space"] == "pixels"
    # The value the shared SOURCES.md quotes for the first desktop row.
    assert json.loads(load_examples(FIX / "screenspot_v2/screenspot_desktop_v2.json",
                                    allow_missing_images=True)[0][0].answer) == [910, 78, 954, 112]


def test_screenspot_declared_size_checked_against_screenshot(tmp_path):
    row = json.loads((FIX / "screenspot_v2/screenspot_desktop_v2.json").read_text())[0]
    Image.new("RGB", (480, 270)).save(tmp_path / row["img_filename"])  # half the declared 960x540
    (tmp_path / "d.json").write_text(json.dumps([row]))
    with pytest.raises(DataError, match="img_size"):
        load_examples(tmp_path / "d.json", strict=True)


def test_seeclick_xywh_converted_to_xyxy():
    # Synthetic fixture (no original SeeClick file is in the shared data).
    path = FIX / "seeclick" / "screenspot_synthetic.json"
    examples, report = load_examples(path)
    assert report.format == "seeclick" and report.loaded == 2
    for ex, r in zip(examples, json.loads(path.read_text())):
        x, y, w, h = r["bbox"]
        assert json.loads(ex.answer) == [x, y, x + w, y + h]
        assert ex.meta["bbox_xywh"] == [x, y, w, h]
        assert ex.meta["image_size"] == [80, 60]


def test_ui_r1_actions_and_the_real_empty_task_row():
    path = FIX / "ui_r1" / "ac_test.json"
    raw = json.loads(path.read_text())
    examples, report = load_examples(path, allow_missing_images=True)
    assert report.format == "ui_r1"
    assert report.skipped == {"missing_field": 1} and "row 5" in report.samples["missing_field"][0]
    assert [json.loads(ex.answer) for ex in examples] == [r["gt"] for r in raw[:5]]
    assert [ex.meta["action_type"] for ex in examples] == ["open_app", "click", "input_text", "navigate_back",
                                                          "scroll"]


def test_visual_rft_decoded_uses_class_file():
    path = FIX / "visual_rft" / "derived" / "pets_val_decoded.jsonl"
    classes = (FIX / "visual_rft/classification/val_data/pets.txt").read_text().split()
    examples, report = load_examples(path, allow_missing_images=True)
    assert report.format == "visual_rft_cls" and report.loaded == 4
    assert all(ex.meta["classes"] == classes for ex in examples) and len(classes) == 37
    assert [ex.answer for ex in examples] == [classes[ex.meta["label"]] for ex in examples]
    assert examples[-1].answer == "yorkshire_terrier" and "pet" in examples[0].prompt


def test_visual_rft_pth(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "pets.txt").write_text((FIX / "visual_rft/classification/val_data/pets.txt").read_text())
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    Image.new("RGB", (20, 10)).save(img_dir / "beagle_1.jpg")
    data = [{"/mnt/elsewhere/beagle_1.jpg": {"label": torch.tensor(4), "pred_logits": torch.zeros(3)}},
            {"/mnt/elsewhere/missing.jpg": {"label": torch.tensor(0)}}]
    torch.save(data, tmp_path / "pets.pth")
    examples, report = load_examples(tmp_path / "pets.pth", image_root=img_dir)
    assert report.format == "visual_rft_cls"
    assert [ex.answer for ex in examples] == ["beagle"] and report.skipped == {"missing_image": 1}
    assert Path(examples[0].images[0]) == img_dir / "beagle_1.jpg"


def test_lmm_r1_message_format():
    examples, report = load_examples(FIX / "lmm_r1" / "test_message.jsonl", allow_missing_images=True)
    assert report.format == "lmm_r1" and report.loaded == 2
    first, second = examples
    assert first.task == "math" and first.answer == "60" and first.meta["raw_answer"] == "$\\boxed{60}$"
    assert "boxed" in first.meta["system_prompt"]
    assert second.task == "multiple_choice" and second.answer == "A" and second.meta["choices"] == list("ABCDE")
    assert first.meta["missing_images"] == ["/root/projects/OpenRLHF/data/test//images/1.jpg"]


def test_generic_mapping_on_a_real_file():
    examples, report = load_examples(FIX / "mmk12" / "k12.json", mapping="prompt=question,answer=answer,"
                                     "images=image_path,id=id,kind=id", task="math")
    raw = json.loads((FIX / "mmk12" / "k12.json").read_text())
    assert report.format == "generic" and report.skipped == {"missing_image": 1}
    assert [ex.prompt for ex in examples] == [r["question"] for r in raw[:3]]
    assert examples[0].meta["kind"] == raw[0]["id"] and examples[0].task == "math"


def test_generic_grounding_and_choices(tmp_path):
    Image.new("RGB", (100, 50)).save(tmp_path / "s.png")
    rows = [{"q": "where", "box": [1, 2, 30, 40], "img": "s.png", "meta": {"size": [100, 50]}},
            {"q": "which", "opts": ["cat", "dog"], "lab": "dog", "img": "s.png"}]
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(rows[1]) + "\n")
    g, _ = load_examples(tmp_path / "a.jsonl", mapping={"prompt": "q", "answer": "box", "images": "img",
                                                        "image_size": "meta.size"}, task="grounding")
    assert g[0].answer == "[1, 2, 30, 40]" and g[0].meta["image_size"] == [100, 50]
    mc, _ = load_examples(tmp_path / "b.jsonl", mapping="prompt=q,answer=lab,choices=opts,images=img")
    assert mc[0].task == "multiple_choice" and mc[0].answer == "B" and mc[0].meta["answer_text"] == "dog"


def test_format_table_and_detection():
    assert set(FORMATS) >= {"geometry3k_raw", "geometry3k", "mathvision", "mathvista", "mmk12", "screenspot_pro",
                            "seeclick", "ui_r1", "visual_rft_cls", "r1v_counting", "r1v_geoqa", "lmm_r1",
                            "generic"}
    with pytest.raises(DataError) as err:
        get_format("screenspot")
    assert "screenspot_pro" in str(err.value) and "seeclick" in str(err.value)
    assert detect_format(FIX / "seeclick" / "screenspot_synthetic.json") == "seeclick"
    examples, _ = load_examples(FIX / "mmk12" / "k12.json", format="mmk12", limit=2)
    assert len(examples) == 2


def test_undetectable_columns_ask_for_format(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"foo": 1, "bar": 2}) + "\n")
    with pytest.raises(DataError, match="--format"):
        load_examples(tmp_path / "x.jsonl")


def test_generic_detection_boxes_validated(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "d.png")
    rows = [{"q": "find", "objs": [{"label": "cat", "bbox": [1, 2, 30, 40]}], "img": "d.png"},
            {"q": "find", "objs": [{"label": "dog", "bbox": [10, 10, 70, 20]}], "img": "d.png"},
            {"q": "find", "objs": '[{"bbox": [1, 1, 2, 2]}]', "img": "d.png"}]
    (tmp_path / "det.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, report = load_examples(tmp_path / "det.jsonl", mapping="prompt=q,answer=objs,images=img",
                                     task="detection")
    assert [json.loads(ex.answer) for ex in examples] == [rows[0]["objs"]]
    assert report.skipped == {"box_outside_image": 1, "invalid_box": 1}
    assert "objs[0].bbox" in report.samples["box_outside_image"][0]

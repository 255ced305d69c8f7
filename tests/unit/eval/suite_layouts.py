"""Tiny local copies of every suite benchmark, each in the file layout it is published in.

Rows come from the real sample files in ``tests/fixtures/data`` where the project has them (MathVista,
MATH-Vision, MM-EUREKA K12; Geometry3K's rows follow the hiyouga conversion of the InterGPS samples); for the others the
rows are written here in the published column layout (names and types from the dataset cards cited in
``visent.eval.suites``), with short made-up content. Images are small generated PNGs.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def png_bytes(colour=(200, 30, 30), size=(32, 24)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _image_struct(name: str, colour=(200, 30, 30)) -> dict:
    return {"bytes": png_bytes(colour), "path": name}


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_png(path: Path, colour=(10, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(colour))


def build_geo3k(root: Path) -> None:
    # hiyouga/geometry3k test parquet: images (list of Image structs), problem, answer (the option's value).
    rows = [
        {"images": [_image_struct("11.png")], "problem": "<image>In $\\odot X, A B=30, C D=30,$ and "
         "$m \\widehat{C Z}=40$. Find $m\\widehat{A B}$", "answer": "80"},
        {"images": [_image_struct("12.png", (0, 90, 0))], "problem": "<image>Find x.", "answer": "13"},
    ]
    _parquet(root / "geo3k" / "data" / "test-00000-of-00001.parquet", rows)


def build_mmk12(root: Path) -> None:
    # MM-EUREKA eval/k12: the real sample rows whose images the fixtures hold.
    source = FIXTURES / "mmk12"
    rows = [r for r in json.loads((source / "k12.json").read_text(encoding="utf-8"))
            if (source / r["image_path"]).is_file()]
    (root / "mmk12" / "images").mkdir(parents=True, exist_ok=True)
    (root / "mmk12" / "k12.json").write_text(json.dumps(rows), encoding="utf-8")
    for row in rows:
        shutil.copy(source / row["image_path"], root / "mmk12" / row["image_path"])


def build_mmk12_hub(root: Path) -> None:
    # FanqingM/MMK12 test parquet: id, subject, question (options inline, one "A. .." per line), answer
    # (letter), image ({bytes, path}).
    rows = [
        {"id": "m1", "subject": "physics", "question": "The block slides down the incline shown. Its "
         "acceleration is\nA. 2 m/s^2\nB. 4.9 m/s^2\nC. 9.8 m/s^2\nD. 0", "answer": "B",
         "image": _image_struct("m1.png")},
        {"id": "m2", "subject": "math", "question": "In the figure, find the angle x.\nA. 30°\nB. 45°\nC. 60°\n"
         "D. 90°", "answer": "C", "image": _image_struct("m2.png", (0, 0, 0))},
    ]
    _parquet(root / "mmk12" / "data" / "test-00000-of-00001.parquet", rows)


def build_hallusionbench(root: Path) -> None:
    base = {"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "sample_note": "circle",
            "gt_answer_details": "", "filename": "./hallusion_bench/VD/illusion/0_0.png"}
    rows = [
        {**base, "figure_id": "0", "question_id": "0", "question": "Is the right orange circle the same size as "
         "the left orange circle?", "gt_answer": "1", "image": _image_struct("0_0.png")},
        {**base, "figure_id": "1", "question_id": "0", "question": "Is the right orange circle the same size as "
         "the left orange circle?", "gt_answer": "0", "image": _image_struct("0_1.png", (0, 0, 200))},
    ]
    _parquet(root / "hallusionbench" / "data" / "image-00000-of-00001.parquet", rows)


def build_mathvista(root: Path) -> None:
    # GitHub lupantech/MathVista layout: data/testmini.json (pid -> row) with images/ beside data/.
    source = FIXTURES / "mathvista" / "data" / "testmini.json"
    real = json.loads(source.read_text(encoding="utf-8"))
    rows = {pid: real[pid] for pid in ("1", "3", "5")}
    (root / "mathvista" / "data").mkdir(parents=True, exist_ok=True)
    (root / "mathvista" / "data" / "testmini.json").write_text(json.dumps(rows), encoding="utf-8")
    for row in rows.values():
        _write_png(root / "mathvista" / row["image"])


def build_wemath(root: Path) -> None:
    # GitHub We-Math/We-Math data/testmini.json: option is one lettered string, answer a letter,
    # image_path relative to data/.
    rows = [
        {"ID": "2steps_1", "split": "testmini", "knowledge concept": "Length units",
         "question": "According to the diagram: OA = ( ) m, AB = ( ) m",
         "option": "A. 300, 400;B. 400, 300;C. 3000, 4000;D. 4000, 3000; E. No correct answer", "answer": "C",
         "image_path": "2steps/image/1-1.png", "key": "2steps_1", "question number": 1,
         "knowledge concept description": "..."},
        {"ID": "2steps_9", "split": "testmini", "knowledge concept": "Left-Right Position",
         "question": "As shown in the diagram, the block to the right of H is ( ).",
         "option": "A. F;    B. D;    C. B;    D. I; E. No correct answer", "answer": "D",
         "image_path": "2steps/image/9-1.png", "key": "2steps_1", "question number": 9,
         "knowledge concept description": "..."},
    ]
    (root / "wemath" / "data").mkdir(parents=True, exist_ok=True)
    (root / "wemath" / "data" / "testmini.json").write_text(json.dumps(rows, indent=4), encoding="utf-8")
    for row in rows:
        _write_png(root / "wemath" / "data" / row["image_path"])


def build_mathverse(root: Path) -> None:
    meta = {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}
    rows = [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Dominant",
         "question": "As shown in the figure, AB is parallel to CD, angle 1 = 50°. Find angle 2.\nChoices:\n"
                     "A:40°\nB:50°\nC:130°\nD:140°",
         "image": _image_struct("1.png"), "answer": "C", "question_type": "multi-choice", "metadata": meta,
         "query_wo": "...", "query_cot": "..."},
        {"sample_index": "2", "problem_index": "2", "problem_version": "Vision Only",
         "question": "According to the question shown in the image, please directly answer the question.",
         "image": _image_struct("2.png"), "answer": "12", "question_type": "free-form", "metadata": meta,
         "query_wo": "...", "query_cot": "..."},
    ]
    _parquet(root / "mathverse" / "testmini.parquet", rows)


def build_mathvision(root: Path) -> None:
    # GitHub mathllm/MATH-V layout, the test split's file name: data/test.jsonl + images/.
    source = FIXTURES / "mathvision"
    lines = (source / "data" / "testmini.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "mathvision" / "data").mkdir(parents=True, exist_ok=True)
    (root / "mathvision" / "data" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in lines:
        image = json.loads(line)["image"]
        (root / "mathvision" / image).parent.mkdir(parents=True, exist_ok=True)
        if (source / image).is_file():
            shutil.copy(source / image, root / "mathvision" / image)
        else:
            _write_png(root / "mathvision" / image)


def build_dynamath(root: Path) -> None:
    rows = [
        {"id": "1", "question": "What is the value of f(2) for the function in the image?",
         "image": "images/1.png", "decoded_image": _image_struct("1.png"), "ground_truth": "3.5",
         "answer_type": "float", "subject": "algebra", "knowledge_level": "high school"},
        {"id": "2", "question": "Which graph is increasing?\nChoices:\n(A) red\n(B) blue\n(C) green",
         "image": "images/2.png", "decoded_image": _image_struct("2.png"), "ground_truth": "B",
         "answer_type": "multiple choice", "subject": "graph theory", "knowledge_level": "elementary"},
    ]
    _parquet(root / "dynamath" / "data" / "sample1-00000-of-00001.parquet", rows)


def build_logicvista(root: Path) -> None:
    rows = {
        "v1_0": {"imagename": "v1_0.png", "question": "What choice (A, B, C, or D) should be in place of the "
                 "question mark that fits the pattern?", "answer": "C", "reasoning": "...",
                 "skill": ["inductive"], "capability": ["diagram"], "imagesource": "x", "sourcelink": "x"},
        "v1_1": {"imagename": "v1_1.png", "question": "Which shape comes next?", "answer": "A", "reasoning": "...",
                 "skill": ["deductive"], "capability": ["diagram"], "imagesource": "x", "sourcelink": "x"},
    }
    (root / "logicvista" / "data").mkdir(parents=True, exist_ok=True)
    (root / "logicvista" / "data" / "dataset.json").write_text(json.dumps(rows), encoding="utf-8")
    for row in rows.values():
        _write_png(root / "logicvista" / "data" / "images" / row["imagename"])


def build_mmmu_pro(root: Path) -> None:
    none_images = {f"image_{i}": None for i in range(1, 8)}
    rows = [
        {"id": "test_Accounting_1", "question": "<image 1> What is the total cost?",
         "options": "['$6', '$7', '$8', '$9', '$10', '$11', '$12', '$13', '$14', '$15']",
         "explanation": "", **none_images, "image_1": _image_struct("a.png"), "img_type": "['Tables']",
         "answer": "B", "topic_difficulty": "Medium", "subject": "Accounting"},
        {"id": "test_Art_2", "question": "Compare <image 1> and <image 2>: which is older?",
         "options": "['the first', 'the second', \"it's unknown\"]", "explanation": "", **none_images,
         "image_1": _image_struct("b.png"), "image_2": _image_struct("c.png", (0, 200, 0)),
         "img_type": "['Paintings']", "answer": "A", "topic_difficulty": "Hard", "subject": "Art"},
    ]
    _parquet(root / "mmmu_pro" / "standard (10 options)" / "test-00000-of-00001.parquet", rows)


BUILDERS = {
    "geo3k": build_geo3k, "mmk12": build_mmk12, "hallusionbench": build_hallusionbench,
    "mathvista": build_mathvista, "wemath": build_wemath, "mathverse": build_mathverse,
    "mathvision": build_mathvision, "dynamath": build_dynamath, "logicvista": build_logicvista,
    "mmmu_pro": build_mmmu_pro,
}


def build_all(root: Path, keys=None) -> Path:
    for key in keys or BUILDERS:
        BUILDERS[key](root)
    return root


def remove(root: Path, key: str) -> None:
    from visent.eval.suites import BENCHMARKS

    shutil.rmtree(root / BENCHMARKS[key].folder)

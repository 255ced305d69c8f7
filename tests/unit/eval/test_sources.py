"""``--data`` specs: lab streams, example jsonl files (round trip, clear errors), dataset files, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visent.data.schema import Example
from visent.eval.sources import EvalDataError, read_examples_jsonl, resolve, write_examples_jsonl

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def test_lab_spec_uses_the_heldout_stream():
    from visent.data.synthetic import make_examples

    bench = resolve("lab:counting:3:5")
    assert bench.name == "lab-counting" and len(bench.examples) == 3
    training_ids = {ex.id for ex in make_examples("counting", 50, 5)}
    assert not training_ids & {ex.id for ex in bench.examples}
    renamed = resolve("mine=lab:counting:2")
    assert renamed.name == "mine" and len(renamed.examples) == 2
    with pytest.raises(EvalDataError, match="valid tasks"):
        resolve("lab:juggling")
    with pytest.raises(EvalDataError, match="integers"):
        resolve("lab:counting:many")


def test_examples_jsonl_round_trip_and_errors(tmp_path):
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (28, 28), (255, 0, 0)).save(image)
    examples = [
        Example(id="a", task="math", prompt="1+1?", images=[str(image)], answer="2", meta={"k": 1}),
        Example(id="b", task="counting", prompt="how many?", answer="3", clean_answer="4", is_noisy=True),
    ]
    path = tmp_path / "set.jsonl"
    write_examples_jsonl(path, examples)
    assert read_examples_jsonl(path) == examples
    bench = resolve(f"named={path}")
    assert bench.name == "named" and bench.examples == examples
    assert resolve(str(path)).name == "set"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "task": "math", "prompt": "p", "answer": "1"}) + "\n{broken\n")
    with pytest.raises(EvalDataError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_examples_jsonl(bad)
    bad.write_text(
        json.dumps({"id": "x", "task": "math", "prompt": "p", "answer": "1", "images": [3]}) + "\n"
    )
    with pytest.raises(EvalDataError, match=r"line 1, field 'images'"):
        read_examples_jsonl(bad)
    with pytest.raises(EvalDataError, match="in-memory"):
        write_examples_jsonl(
            tmp_path / "x.jsonl", [Example(id="p", task="math", prompt="", images=[object()])]
        )


def test_dataset_files_go_through_the_loaders():
    bench = resolve(str(FIXTURES / "mathvision/data/testmini.jsonl"), limit=2)
    assert bench.name == "mathvision-testmini" and len(bench.examples) == 2
    with pytest.raises(EvalDataError, match="no such file"):
        resolve("nothing/here.json")

"""LLaVA/ShareGPT ``conversations`` and OpenAI/TRL ``messages`` rows, and nested ``--map`` paths."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from visent.data.errors import DataError
from visent.data.loaders import detect_format, load_examples
from visent.data.table import load_table


def _png(size, color=(0, 0, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_conversations_detected_with_images_in_order(chat_sets):
    conv, _ = chat_sets
    assert detect_format(conv) == "conversations"
    examples, report = load_examples(conv)
    assert [ex.id for ex in examples] == ["1", "2"]
    first, second = examples
    assert first.prompt == "How many squares in total?" and first.answer == "2" and first.task == "math"
    assert first.meta["raw_answer"] == "<answer>2</answer>"
    assert [Path(p).name for p in first.images] == ["a.png", "b.png"]
    assert second.task == "grounding" and second.answer == "[0, 0, 42, 42]"
    assert second.meta["system_prompt"] == "Think first." and second.meta["image_size"] == [42, 42]
    assert dict(report.skipped) == {"bad_value": 1}
    assert "vlm_r1.jsonl line 3, field 'conversations.0.value'" in report.samples["bad_value"][0]
    with pytest.raises(DataError, match=r"line 3, field 'conversations.0.value': the question has 2 <image>"):
        load_examples(conv, strict=True)


def test_messages_detected_with_column_and_inline_images(chat_sets, tmp_path):
    _, msgs = chat_sets
    assert detect_format(msgs) == "messages"
    examples, report = load_examples(msgs)
    assert report.skipped_total == 0
    a, b, c = examples
    assert a.prompt == "Which one is wider?" and a.answer == "the first"
    assert a.meta["system_prompt"] == "Answer briefly."
    assert [Path(p).name for p in a.images] == ["a.png", "b.png"]
    assert b.answer == "2" and Path(b.images[0]).name == "c.png" and b.images[1].size == (14, 70)
    assert c.images == [] and c.answer == "5"
    # The streaming table keeps the same order and the inline image as bytes.
    table = load_table(msgs, cache_dir=tmp_path / "cache")
    rows = table.trl_dataset()
    assert [im.size for im in rows[0]["images"]] == [(56, 28), (28, 56)]
    assert [im.size for im in rows[1]["images"]] == [(42, 42), (14, 70)]
    assert rows[2]["images"] == []


def test_messages_placeholder_count_must_match_images(tmp_path):
    (tmp_path / "a.png").write_bytes(_png((8, 8)))
    row = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                        {"role": "assistant", "content": "1"}], "images": ["a.png", "a.png"]}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl line 1, field 'images': the images column gives 2"):
        load_examples(tmp_path / "m.jsonl", strict=True)


def test_generic_map_reaches_nested_fields_and_list_items(chat_sets):
    conv, _ = chat_sets
    rows = [json.loads(line) for line in conv.read_text().splitlines()][:2]
    for r in rows:
        r["meta"] = {"answer": r["conversations"][-1]["value"], "source": {"name": "vlm-r1"}}
    path = conv.with_name("nested.jsonl")
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples, report = load_examples(path, mapping="prompt=conversations.0.value,answer=meta.answer,"
                                                    "images=image,origin=meta.source.name,last=conversations.-1.from")
    assert report.skipped_total == 0
    assert examples[0].prompt == "How many squares in total?" and examples[0].answer == "<answer>2</answer>"
    assert examples[1].prompt == "Think first."  # item 0 of row 2 is its system turn: the path says so
    assert [ex.meta["origin"] for ex in examples] == ["vlm-r1", "vlm-r1"]
    assert [ex.meta["last"] for ex in examples] == ["gpt", "gpt"]
    assert [len(ex.images) for ex in examples] == [2, 1]
    _, bad = load_examples(path, mapping="prompt=conversations.5.value,answer=meta.answer")
    assert dict(bad.skipped) == {"missing_field": 2}
    assert "field 'conversations.5.value'" in bad.samples["missing_field"][0]


def test_multi_image_order_reaches_the_processor(chat_sets, tmp_path):
    """Row images -> TRL's message preparation -> the Qwen image processor: one grid per image, in order."""
    from transformers import Qwen2VLImageProcessor
    from trl.data_utils import prepare_multimodal_messages

    _, msgs = chat_sets
    row = load_table(msgs, cache_dir=tmp_path / "cache").trl_dataset()[0]  # a.png (56x28), b.png (28x56)
    messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
    parts = [p["image"] for p in messages[0]["content"] if p["type"] == "image"]
    assert [im.size for im in parts] == [(56, 28), (28, 56)]
    processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, merge_size=2)
    grids = processor(images=parts, return_tensors="pt")["image_grid_thw"].tolist()
    assert grids == [[1, 2, 4], [1, 4, 2]]  # (t, h/14, w/14) of each image, first image first

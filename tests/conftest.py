"""Suite-wide fixtures."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache_in_tmp(tmp_path_factory):
    """Loaded datasets are cached (visent.data.cache); tests keep theirs out of the user's ~/.cache."""
    old = os.environ.get("VISENT_CACHE_DIR")
    os.environ["VISENT_CACHE_DIR"] = str(tmp_path_factory.mktemp("visent-dataset-cache"))
    yield
    if old is None:
        os.environ.pop("VISENT_CACHE_DIR", None)
    else:
        os.environ["VISENT_CACHE_DIR"] = old


def _png(size, color=(0, 0, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_chat_sets(folder: Path) -> tuple[Path, Path]:
    """A VLM-R1-style ``conversations`` jsonl and an OpenAI/TRL ``messages`` jsonl; two images per row
    where given, of different sizes so their order is visible."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for name, size in (("a", (56, 28)), ("b", (28, 56)), ("c", (42, 42))):
        (folder / "img" / f"{name}.png").write_bytes(_png(size))
    conv = folder / "vlm_r1.jsonl"
    conv.write_text("\n".join(json.dumps(r) for r in [
        {"id": 1, "image": ["img/a.png", "img/b.png"],
         "conversations": [{"from": "human", "value": "<image><image>How many squares in total?"},
                           {"from": "gpt", "value": "<answer>2</answer>"}]},
        {"id": 2, "image": "img/c.png",
         "conversations": [{"from": "system", "value": "Think first."},
                           {"from": "human", "value": "<image>Box the square."},
                           {"from": "gpt", "value": "[0, 0, 42, 42]"}]},
        {"id": 3, "image": ["img/a.png"],  # two placeholders, one image: a bad row
         "conversations": [{"from": "human", "value": "<image><image>?"}, {"from": "gpt", "value": "1"}]},
    ]) + "\n")
    data_url = "data:image/png;base64," + base64.b64encode(_png((14, 70))).decode()
    msgs = folder / "openai.jsonl"
    msgs.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                   {"type": "text", "text": "Which one is wider?"}]},
                      {"role": "assistant", "content": "the first"}],
         "images": ["img/a.png", "img/b.png"]},
        {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "img/c.png"}},
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": "How many images?"}]}],
         "solution": "2"},
        {"messages": [{"role": "user", "content": "No image here: what is 2+3?"},
                      {"role": "assistant", "content": [{"type": "text", "text": "5"}]}]},
    ]) + "\n")
    return conv, msgs


@pytest.fixture
def chat_sets(tmp_path):
    """(conversations jsonl, messages jsonl) under tmp_path; see :func:`write_chat_sets`."""
    return write_chat_sets(tmp_path)

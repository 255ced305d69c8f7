"""The shared JSONL reader and atomic writer (``visent.io``)."""

from __future__ import annotations

import json

import pytest

from visent.io import JsonlError, json_lines, read_jsonl, write_json_atomic


def test_json_lines_numbers_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n"x"\n', encoding="utf-8")
    assert list(json_lines(path)) == [(1, {"a": 1}), (4, [2]), (5, "x")]
    assert read_jsonl(path) == [{"a": 1}, [2], "x"]


def test_a_bad_line_fails_naming_file_and_line_or_reads_as_none(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n{"torn": \n', encoding="utf-8")
    with pytest.raises(JsonlError, match=r"b\.jsonl, line 2: not valid JSON"):
        read_jsonl(path)
    assert list(json_lines(path, on_bad="none")) == [(1, {"a": 1}), (2, None)]


def test_missing_file(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "none.jsonl")


def test_write_json_atomic_creates_folders_and_round_trips(tmp_path):
    path = tmp_path / "x" / "y.json"
    write_json_atomic(path, {"é": [1, 2]}, indent=1)
    assert json.loads(path.read_text(encoding="utf-8")) == {"é": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["y.json"]  # no temporary file left behind

"""`visent data inspect` through ``main([...])``: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from visent.cli import main as visent_main
from visent.data.cli import main

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def test_inspect_reports_loaded_skipped_and_one_example(capsys):
    rc = main(["inspect", str(FIX / "mathvision/data/testmini.jsonl")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "format: mathvision" in out and "loaded: 3" in out and "skipped: 1" in out
    assert "skipped 1 x missing_image" in out and "line 4" in out
    assert "id:      16" in out and "answer:  '11'" in out


def test_inspect_strict_fails_with_the_row(capsys):
    rc = main(["inspect", str(FIX / "mathvision/data/testmini.jsonl"), "--strict"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "testmini.jsonl line 4, field 'image'" in captured.err and "Traceback" not in captured.err


def test_inspect_noise_shows_corruptions(capsys):
    path = FIX / "screenspot_v2/screenspot_desktop_v2.json"
    rc = main(["inspect", str(path), "--allow-missing-images", "--noise", "0.5", "--seed", "7"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "corrupted 2 of 3 rows (target 2)" in out and "2 x grounding:disjoint_box" in out
    clean = [json.dumps(r["bbox"]) for r in json.loads(path.read_text())]
    listed = [line for line in out.splitlines() if "(grounding, disjoint_box)" in line]
    assert len(listed) == 2 and all(any(f"'{c}' ->" in line for c in clean) for line in listed)


def test_inspect_generic_mapping_limit_and_format(capsys):
    rc = main(["inspect", str(FIX / "mmk12/k12.json"), "--map", "prompt=question,answer=answer,images=image_path",
               "--task", "math", "--limit", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "format: generic" in out and "rows: 2  loaded: 2" in out


def test_inspect_usage_errors(capsys):
    assert main(["inspect", str(FIX / "mmk12/k12.json"), "--format", "k13"]) == 2
    assert "valid formats:" in capsys.readouterr().err
    assert main(["inspect", str(FIX / "mmk12/k12.json"), "--noise", "1.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main(["inspect", str(FIX / "nope.jsonl")]) == 2
    assert main([]) == 2
    assert main(["inspect", "--help"]) == 0
    assert "--noise" in capsys.readouterr().out


def test_nothing_loaded_is_an_error(capsys):
    rc = main(["inspect", str(FIX / "mathvista/data/testmini.json")])
    captured = capsys.readouterr()
    assert rc == 1 and "skipped 4 x missing_image" in captured.out and "no examples loaded" in captured.err


def test_dispatcher_routes_data(capsys):
    assert visent_main(["data", "inspect", str(FIX / "lmm_r1/test_message.jsonl"), "--allow-missing-images"]) == 0
    assert "format: lmm_r1" in capsys.readouterr().out


def test_inspect_uses_and_refreshes_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VISENT_CACHE_DIR", str(tmp_path / "cache"))
    path = str(FIX / "mmk12/k12.json")
    assert main(["inspect", path]) == 0
    first = capsys.readouterr()
    assert "cached at " + str(tmp_path / "cache") in first.err and "loaded: " in first.out
    assert main(["inspect", path]) == 0
    second = capsys.readouterr()
    assert "from cache" in second.err and second.out == first.out  # same counts and example, one pass ago
    assert main(["inspect", path, "--no-cache", "--no-progress"]) == 0
    third = capsys.readouterr()
    assert third.err == "" and third.out == first.out

"""``visent eval`` end to end on the locally built tiny Qwen2.5-VL: generation, files, resume."""

from __future__ import annotations

import json

import pytest

from visent.data.schema import Example
from visent.eval import cli
from visent.eval.sources import resolve, write_examples_jsonl


def test_eval_cli_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    from PIL import Image

    image = tmp_path / "square.png"
    Image.new("RGB", (56, 56), (0, 0, 255)).save(image)
    # A mixed file: one row with an image, one text-only, so the backend batches both kinds together.
    data = tmp_path / "mine.jsonl"
    write_examples_jsonl(
        data,
        [
            Example(id="img", task="counting", prompt="How many squares?", images=[str(image)], answer="1"),
            Example(id="txt", task="math", prompt="What is 1+1?", answer="2"),
        ],
    )
    out = tmp_path / "eval"
    argv = [
        "--model",
        "tiny:qwen2_5_vl",
        "--data",
        "lab:counting:3",
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--no-progress",
        "--template",
        "think_answer",
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "| lab-counting | counting | 3 |" in captured.out and "| mine | counting, math | 2 |" in captured.out
    )
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted((r["benchmark"], r["id"]) for r in records) == sorted(
        [("lab-counting", ex.id) for ex in resolve("lab:counting:3").examples]
        + [("mine", "img"), ("mine", "txt")]
    )
    assert all(isinstance(r["response"], str) for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["mine"]["n"] == 2 and len(results["results"]["mine"]["ci95"]) == 2
    assert (out / "results.md").read_text().startswith("# Evaluation of `tiny:qwen2_5_vl`")

    # Second run: everything is already scored, so the model is never even built.
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when nothing is left to generate")

    monkeypatch.setattr(cli, "_make_backend", no_model)
    assert cli.main(argv) == 0
    assert "0 generated, 5 reused" in capsys.readouterr().err
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 5

    # Changing a generation setting on the same folder is refused with a clear message.
    assert cli.main([*argv[:-1], "plain"]) == 1
    assert "different settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--reward", "grounding"], 2, "TASK=NAME"),
        (["--template", "no placeholder"], 2, "{prompt}"),
        (["--data", "lab:juggling"], 2, "valid tasks"),  # bad input: exit 2 (issue #16)
    ],
)
def test_eval_cli_usage_errors(tmp_path, capsys, extra, code, message):
    argv = ["--model", "tiny:qwen2_5_vl", "--data", "lab:counting:1", "--out", str(tmp_path), *extra]
    assert cli.main(argv) == code
    assert message in capsys.readouterr().err


def test_eval_image_that_does_not_decode_is_a_clear_error_then_skippable(tmp_path, monkeypatch, capsys):
    """Header checks pass a truncated PNG; generating it fails naming the example and its row (predictions
    made before it are kept), and ``--image-check decode`` skips the row at load time instead."""
    import io

    from PIL import Image

    from visent.eval.generation import load_images

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, format="PNG")
    (tmp_path / "good.png").write_bytes(buf.getvalue())
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    rows = [{"id": "a", "question": "q", "answer": "1", "image_path": "good.png"},
            {"id": "b", "question": "q", "answer": "2", "image_path": "cut.png"}]
    (tmp_path / "k12.json").write_text(json.dumps(rows))
    # A stand-in backend that opens the images as the real ones do, without building a model.
    monkeypatch.setattr(cli, "_make_backend", lambda args, n: lambda exs: [str(len(load_images(e))) for e in exs])
    argv = ["--model", "tiny:qwen2_5_vl", "--data", str(tmp_path / "k12.json"), "--format", "mmk12",
            "--out", str(tmp_path / "out"), "--batch-size", "1", "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "example 'b'" in err and "k12.json row 1" in err and "--image-check decode" in err
    assert [json.loads(x)["id"] for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()] == ["a"]
    assert cli.main([*argv, "--image-check", "decode"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmarks"]["k12"]["skipped_rows"] == {"corrupt_image": 1}

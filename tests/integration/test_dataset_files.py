"""``visent train`` and ``visent eval`` end to end on dataset files read through the streaming table: a
VLM-R1 ``conversations`` jsonl and an OpenAI ``messages`` jsonl (two images per row where given, loaded by
detection), and a file whose images pass the load-time header check but do not decode."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("which", ["conversations", "messages"])
def test_train_and_eval_on_chat_layouts(tmp_path, which, capsys, chat_sets):
    from visent.eval import cli as eval_cli
    from visent.trainer.callbacks import read_metrics
    from visent.trainer.cli import main as train_main

    conv, msgs = chat_sets
    data = conv if which == "conversations" else msgs
    out = tmp_path / "run"
    argv = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", str(data), "--max_steps", "1",
            "--reward_funcs", "math", "--num_generations", "2", "--per_device_train_batch_size", "2",
            "--max_completion_length", "6", "--output_dir", str(out), "--logging_steps", "1",
            "--save_strategy", "no", "--report_to", "none"]
    assert train_main(argv) == 0
    assert [r["step"] for r in read_metrics(str(out))] == [1]
    err = capsys.readouterr().err
    assert f"{data}: " in err and "cached at" in err  # the run log says where the dataset cache is

    eval_out = tmp_path / "eval"
    assert eval_cli.main(["--model", "tiny:qwen2_5_vl", "--data", str(data), "--out", str(eval_out),
                          "--max-new-tokens", "4", "--batch-size", "2", "--no-progress"]) == 0
    records = [json.loads(line) for line in (eval_out / "predictions.jsonl").read_text().splitlines()]
    expected = {"conversations": ["1", "2"], "messages": ["openai:1", "openai:2", "openai:3"]}[which]
    assert sorted(r["id"] for r in records) == expected


def test_train_stops_with_one_line_on_an_image_that_does_not_decode(tmp_path, capsys):
    """Header checks pass truncated PNGs; the batch that needs them ends the run with the row named."""
    import io

    from PIL import Image

    from visent.trainer.cli import main as train_main

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    rows = [{"id": i, "question": "How many?", "answer": "1", "image_path": "cut.png"} for i in ("a", "b")]
    (tmp_path / "k12.json").write_text(json.dumps(rows))
    argv = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", str(tmp_path / "k12.json"), "--max_steps", "1",
            "--reward_funcs", "math", "--num_generations", "2", "--per_device_train_batch_size", "2",
            "--max_completion_length", "4", "--output_dir", str(tmp_path / "run"), "--save_strategy", "no",
            "--report_to", "none"]
    assert train_main(argv) == 1
    err = capsys.readouterr().err
    assert "visent train: " in err and "k12.json row " in err and "field 'images'" in err

"""``visent train`` and ``visent eval`` end to end on a VLM-R1 ``conversations`` jsonl and an OpenAI
``messages`` jsonl (two images per row where given), loaded by detection through the streaming table."""

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

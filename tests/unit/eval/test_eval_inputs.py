"""``visent eval --map`` (nested columns, option columns), ``--samples`` through the CLI, and bad input:
one line, exit 2, before anything is generated, with what --out already holds kept and resumable."""

from __future__ import annotations

import json

import pytest

from visent.data.formats.context import parse_options
from visent.eval import cli
from visent.eval.harness import score_example
from visent.eval.sources import resolve


def _dataset(tmp_path):
    from PIL import Image

    Image.new("RGB", (28, 28), (9, 9, 9)).save(tmp_path / "p.png")
    rows = [
        {"q": {"text": "Which colour is the square?"}, "opts": {"B": "blue", "A": "black"},
         "labels": {"answer": "A"}, "pic": "p.png"},
        {"q": {"text": "How dark is it?"}, "opts": {"A": "light", "B": "dark"}, "labels": {"answer": "dark"},
         "pic": "p.png"},
    ]
    path = tmp_path / "mc.json"
    path.write_text(json.dumps(rows))
    return path


MAP = "prompt=q.text,choices=opts,answer=labels.answer,images=pic"


@pytest.mark.parametrize(
    ("value", "options"),
    [
        (["1", 2.5], ["1", "2.5"]),
        ({"B": "two", "A": "one"}, ["one", "two"]),
        ("['$6', '$7', \"it's\"]", ["$6", "$7", "it's"]),
        ('["x", "y"]', ["x", "y"]),
        ("A. 300, 400;B. 400, 300; C. No correct answer", ["300, 400", "400, 300", "No correct answer"]),
        ("A: red\nB: blue", ["red", "blue"]),
        ("just text", None),
        ("A. only one", None),
        ([], None),
        ("[1, ", None),
    ],
)
def test_options_columns_in_their_published_forms(value, options):
    assert parse_options(value) == options


def test_map_with_nested_columns_and_a_dict_options_column(tmp_path):
    bench = resolve(f"mc={_dataset(tmp_path)}", mapping=MAP)
    first, second = bench.examples
    assert first.prompt == "Which colour is the square?\nChoices:\nA. black\nB. blue"
    assert first.task == "multiple_choice" and first.answer == "A"
    assert second.answer == "B" and second.meta["answer_text"] == "dark"  # labelled by option text
    for ex, letter, text, wrong in ((first, "A", "black", "B"), (second, "B", "dark", "light")):
        assert score_example(ex, f"\\boxed{{{letter}}}", {})["score"] == 1.0
        assert score_example(ex, f"<answer>{text}</answer>", {})["score"] == 1.0
        assert score_example(ex, f"\\boxed{{{wrong}}}", {})["score"] == 0.0
        assert score_example(ex, "no answer at all", {})["parse_failed"]


def _stand_in(k):
    def make(args, max_images):
        def generate(exs):
            if k == 1:
                return ["\\boxed{A}" for _ in exs]
            return [["\\boxed{A}", "\\boxed{B}"][: k] + ["\\boxed{A}"] * (k - 2) for _ in exs]
        return generate
    return make


def test_cli_map_and_samples(tmp_path, monkeypatch, capsys):
    data = _dataset(tmp_path)
    monkeypatch.setattr(cli, "_make_backend", _stand_in(2))
    out = tmp_path / "sampled"
    argv = ["--model", "tiny:qwen2_5_vl", "--data", f"mc={data}", "--map", MAP, "--samples", "2",
            "--temperature", "1.0", "--seed", "3", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    # sample 1 says A, sample 2 says B: one right sample per example -> avg@2 = 50%, pass@2 = 100%
    assert "| mc | multiple_choice | 2 | 2 | 50.0 [" in table and "| 100.0 [" in table
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["scores"] for r in rows] == [[1.0, 0.0], [0.0, 1.0]] and all(r["pass"] == 1.0 for r in rows)
    run = json.loads((out / "run.json").read_text())["settings"]
    assert (run["samples"], run["temperature"], run["seed"]) == (2, 1.0, 3)
    # other K on the same folder: refused as any other settings change
    assert cli.main([*argv, "--samples", "3"]) == 1  # the later --samples wins
    assert "different settings" in capsys.readouterr().err


def test_greedy_rows_keep_todays_shape(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_make_backend", _stand_in(1))
    out = tmp_path / "greedy"
    argv = ["--model", "tiny:qwen2_5_vl", "--data", f"mc={_dataset(tmp_path)}", "--map", MAP, "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 0
    assert "| benchmark | task | n | accuracy % [95% CI] |" in capsys.readouterr().out
    row = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert not {"k", "responses", "scores", "pass"} & set(row)
    assert isinstance(row["response"], str) and row["parse_failed"] is False


def test_bad_input_is_one_line_exit_2_and_keeps_what_out_holds(tmp_path, monkeypatch, capsys):
    data = _dataset(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    monkeypatch.setattr(cli, "_make_backend", _stand_in(1))
    out = tmp_path / "out"
    base = ["--model", "tiny:qwen2_5_vl", "--out", str(out), "--no-progress"]
    good = [*base, "--data", f"mc={data}", "--map", MAP]
    assert cli.main(good) == 0
    capsys.readouterr()
    before = (out / "predictions.jsonl").read_bytes()

    def built(*args, **kwargs):
        raise AssertionError("no backend may be built for bad input")

    monkeypatch.setattr(cli, "_make_backend", built)
    cases = [
        ([*base, "--data", f"mc={data}", "--map", "prompt=q.text,answer=nope,images=pic"],
         "skipped, 2 x missing_answer"),
        ([*base, "--data", f"mc={data}", "--map", "prompt"], "bad mapping entry 'prompt'"),
        ([*base, "--data", str(tmp_path / "empty.jsonl"), "--format", "mmk12"], "holds no rows"),
        ([*base, "--data", str(tmp_path / "empty.jsonl")], "holds no rows"),
        ([*base, "--suite", "nope"], "unknown suite 'nope'"),
        ([*base, "--data", f"mc={data}", "--samples", "0"], "--samples must be"),
        ([*base, "--data", f"mc={data}", "--samples", "4"], "--temperature"),
        ([*base, "--data", f"mc={data}", "--samples", "2", "--temperature", "1", "--top-p", "1.5"], "--top-p"),
        ([*base, "--data", f"mc={data}", "--limit", "0"], "--limit"),
        (base, "--data SOURCE"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("visent eval: ") and message in err[0], (argv, err)
        assert (out / "predictions.jsonl").read_bytes() == before

    monkeypatch.setattr(cli, "_make_backend", _stand_in(1))
    assert cli.main(good) == 0
    assert "0 generated, 2 reused" in capsys.readouterr().err

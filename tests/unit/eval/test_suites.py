"""``--suite vepo|vppo``: each benchmark found in its published layout, prompts composed with the options,
labels verified by letter or option text, and missing copies reported all at once."""

from __future__ import annotations

import json

import pytest
from suite_layouts import build_all

from visent.eval import cli
from visent.eval.harness import score_example
from visent.eval.sources import EvalDataError
from visent.eval.suites import BENCHMARKS, SUITES, SuiteDataMissing, resolve_suite, suite_table_markdown


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("bench"))


def _by_name(benchmarks):
    return {b.name: list(b.examples) for b in benchmarks}


def _score(ex, text):
    return score_example(ex, text, {})["score"]


def test_suites_list_the_papers_benchmarks():
    titles = {name: [BENCHMARKS[k].title for k in keys] for name, keys in SUITES.items()}
    assert titles["vepo"] == ["Geo3K", "MMK12", "HallusionBench", "MathVista", "We-Math", "MathVerse", "MathVision"]
    assert sorted(titles["vppo"]) == sorted(["MathVerse", "DynaMath", "MMK12", "Geo3K", "MathVision", "We-Math",
                                             "LogicVista", "MMMU-Pro"])
    table = suite_table_markdown()
    assert all(spec.hub_id in table for spec in BENCHMARKS.values())


@pytest.mark.parametrize("suite", ["vepo", "vppo"])
def test_every_benchmark_resolves_from_its_published_layout(suite_root, suite):
    benches = _by_name(resolve_suite(suite, suite_root))
    assert list(benches) == list(SUITES[suite])
    for name, examples in benches.items():
        assert examples, name
        assert all(ex.images for ex in examples), name  # every row found its image(s)
        assert len({ex.id for ex in examples}) == len(examples), name


def test_option_columns_are_composed_into_the_prompt_and_verified_by_letter_or_text(suite_root):
    benches = _by_name(resolve_suite("vppo", suite_root))
    wemath = {ex.id: ex for ex in benches["wemath"]}
    first = wemath["2steps_1"]
    assert first.prompt.endswith("Choices:\nA. 300, 400\nB. 400, 300\nC. 3000, 4000\nD. 4000, 3000\n"
                                 "E. No correct answer")
    assert first.answer == "C"
    assert _score(first, "\\boxed{C}") == 1.0 and _score(first, "<answer>3000, 4000</answer>") == 1.0
    assert _score(first, "\\boxed{B}") == 0.0 and _score(first, "\\boxed{400, 300}") == 0.0
    # Options that are themselves letters: the label is the letter D ("I"), not the option text "D".
    letters = wemath["2steps_9"]
    assert letters.answer == "D" and letters.meta["answer_text"] == "I"
    assert _score(letters, "\\boxed{D}") == 1.0 and _score(letters, "\\boxed{I}") == 1.0
    assert _score(letters, "\\boxed{B}") == 0.0

    mmmu = {ex.id: ex for ex in benches["mmmu_pro"]}
    cost = mmmu["test_Accounting_1"]
    assert "\nJ. $15" in cost.prompt and cost.answer == "B"
    assert _score(cost, "\\boxed{B}") == 1.0 and _score(cost, "\\boxed{\\$7}") == 1.0
    assert _score(cost, "\\boxed{C}") == 0.0
    assert len(mmmu["test_Art_2"].images) == 2  # image_1 and image_2; the empty image_3..7 are dropped

    # Options inside the question (MathVerse, DynaMath): prompt as published, text answers accepted too.
    verse = {ex.id: ex for ex in benches["mathverse"]}
    mc = verse["1"]
    assert mc.prompt.endswith("Choices:\nA:40°\nB:50°\nC:130°\nD:140°") and mc.task == "multiple_choice"
    assert _score(mc, "\\boxed{C}") == 1.0 and _score(mc, "\\boxed{130^\\circ}") == 1.0
    assert _score(mc, "\\boxed{140}") == 0.0
    assert verse["2"].task == "math" and _score(verse["2"], "\\boxed{12}") == 1.0
    dyna = {ex.id: ex for ex in benches["dynamath"]}
    assert dyna["2"].meta["choices"] == ["red", "blue", "green"] and _score(dyna["2"], "\\boxed{blue}") == 1.0


def test_vepo_specific_layouts(suite_root):
    benches = _by_name(resolve_suite("vepo", suite_root))
    hallu = benches["hallusionbench"]
    assert [ex.answer for ex in hallu] == ["Yes", "No"]
    assert _score(hallu[0], "\\boxed{yes}") == 1.0 and _score(hallu[1], "\\boxed{Yes}") == 0.0
    vista = {ex.id: ex for ex in benches["mathvista"]}
    assert vista["3"].answer == "C" and _score(vista["3"], "\\boxed{145°}") == 1.0  # labelled by option text
    assert _score(vista["1"], "\\boxed{1.2}") == 1.0
    geo = benches["geo3k"]
    assert geo[0].answer == "80" and _score(geo[0], "<answer>80</answer>") == 1.0


def test_mmk12_hub_layout_wins_over_the_github_file(tmp_path):
    from suite_layouts import build_mmk12_hub

    from visent.eval.suites import load_benchmark, locate

    root = build_all(tmp_path / "bench", keys=["mmk12"])
    layout, _ = locate(BENCHMARKS["mmk12"], root)
    assert layout.format == "mmk12"  # only MM-EUREKA's k12.json is there
    build_mmk12_hub(root)
    layout, path = locate(BENCHMARKS["mmk12"], root)
    assert layout.format == "generic" and path.name.startswith("test-")
    physics, geometry = load_benchmark(BENCHMARKS["mmk12"], layout, path, root).examples
    assert physics.task == "multiple_choice" and physics.meta["choices"][1] == "4.9 m/s^2"
    assert _score(physics, "\\boxed{B}") == 1.0 and _score(physics, "\\boxed{4.9 m/s^2}") == 1.0
    assert _score(geometry, "\\boxed{60^\\circ}") == 1.0 and _score(geometry, "\\boxed{A}") == 0.0


def test_limit_applies_per_benchmark(suite_root):
    benches = resolve_suite("vppo", suite_root, limit=1)
    assert all(len(b.examples) == 1 for b in benches)


def test_missing_copies_are_listed_at_once_one_line_each(tmp_path, capsys):
    root = build_all(tmp_path / "bench", keys=["geo3k", "mmk12", "mathvista", "mathverse", "mathvision"])
    with pytest.raises(SuiteDataMissing) as info:
        resolve_suite("vepo", root)
    lines = info.value.lines
    assert len(lines) == 2
    assert lines[0].startswith("HallusionBench (suite vepo): no local copy at ")
    assert str(root / "hallusionbench" / "data" / "image-*.parquet") in lines[0]
    assert "lmms-lab/HallusionBench (split image)" in lines[0]
    assert lines[1].startswith("We-Math (suite vepo)") and "We-Math/We-Math" in lines[1]

    out = tmp_path / "out"
    argv = ["--model", "tiny:qwen2_5_vl", "--suite", "vepo", "--suite-root", str(root), "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("visent eval: ") and "no local copy" in line for line in err)
    assert not out.exists()


def test_root_from_environment_and_unknown_suite(suite_root, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VISENT_EVAL_ROOT", str(suite_root))
    assert [b.name for b in resolve_suite("vepo")] == list(SUITES["vepo"])
    monkeypatch.delenv("VISENT_EVAL_ROOT")
    with pytest.raises(EvalDataError, match="--suite-root DIR or VISENT_EVAL_ROOT"):
        resolve_suite("vepo")
    with pytest.raises(EvalDataError, match="unknown suite 'vpo'"):
        resolve_suite("vpo", suite_root)
    assert cli.main(["--model", "tiny:qwen2_5_vl", "--suite", "vpo", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["visent eval: unknown suite 'vpo'; suites: vepo, vppo"]


def test_suite_mixed_with_data_end_to_end(suite_root, tmp_path, monkeypatch, capsys):
    """A stand-in backend answers every option letter "A" (or "0"): the run writes a row per example of
    each suite benchmark plus the --data one, and scores them with the verifiers."""
    from visent.eval.generation import load_images

    def stand_in(args, max_images):
        return lambda exs: ["\\boxed{A}" if len(load_images(e)) else "\\boxed{0}" for e in exs]

    monkeypatch.setattr(cli, "_make_backend", stand_in)
    out = tmp_path / "run"
    argv = ["--model", "tiny:qwen2_5_vl", "--suite", "vepo", "--suite-root", str(suite_root), "--data",
            "lab:counting:2", "--limit", "2", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert sorted(results) == sorted([*SUITES["vepo"], "lab-counting"])
    assert all(block["n"] <= 2 for block in results.values())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    wemath = [r for r in rows if r["benchmark"] == "wemath"]
    # the first We-Math label is C, the second D: a constant "A" is wrong on both
    assert [r["score"] for r in wemath] == [0.0, 0.0]
    assert "| wemath | multiple_choice | 2 |" in capsys.readouterr().out

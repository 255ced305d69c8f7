"""`visent inspect` end to end on tiny:qwen2_5_vl + lab:counting, and its usage/data errors."""

from __future__ import annotations

import json
import re

from visent.cli import main as visent_main


def test_inspect_writes_a_valid_self_contained_page(tmp_path, capsys):
    out = tmp_path / "deep" / "tokens.html"
    rc = visent_main(
        ["inspect", "--model", "tiny:qwen2_5_vl", "--data", "lab:counting", "--n", "2", "--out", str(out),
         "--max-new-tokens", "6", "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('<section class="example"') == 2
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 4  # clean + perturbed per example
    assert "pixel_values_gaussian" in page and "vepo top-0.2 per response" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "wrote" in capsys.readouterr().err


def test_inspect_scores_given_responses(tmp_path, capsys):
    from visent.data.synthetic import heldout_examples

    ids = [ex.id for ex in heldout_examples(["counting"], 2, 0)]
    responses = tmp_path / "predictions.jsonl"
    responses.write_text("".join(json.dumps({"id": i, "response": f"<answer>{k}</answer>"}) + "\n" for k, i in enumerate(ids)))
    out = tmp_path / "t.html"
    rc = visent_main(
        ["inspect", "--model", "tiny:qwen2_vl", "--data", "lab:counting:2", "--out", str(out), "--responses",
         str(responses), "--perturbation", "identity", "--method", "jsd", "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert "&lt;answer&gt;" in page and "JSD(P, Q) = 0\n" in page


def test_usage_errors_exit_2_with_the_valid_choices(tmp_path, capsys):
    base = ["inspect", "--model", "tiny:qwen2_5_vl", "--data", "lab:counting", "--out", str(tmp_path / "t.html")]
    assert visent_main(base + ["--perturbation", "blur"]) == 2
    assert "--perturbation 'blur' is unknown; valid: pixel_values_gaussian" in capsys.readouterr().err
    assert visent_main(base + ["--method", "vep"]) == 2
    assert "valid: vepo" in capsys.readouterr().err
    assert visent_main(base + ["--ratio", "1.5"]) == 2
    assert "--ratio must be in (0, 1]" in capsys.readouterr().err
    assert visent_main(base + ["--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert visent_main(["inspect", "--model", "m", "--data", "lab:counting", "--out", "x.txt"]) == 2
    assert visent_main(["inspect", "--data", "lab:counting"]) == 2  # --model missing (argparse)
    assert not (tmp_path / "t.html").exists()


def test_data_errors_exit_1_naming_the_source(tmp_path, capsys):
    out = str(tmp_path / "t.html")
    assert visent_main(["inspect", "--model", "tiny:qwen2_5_vl", "--data", "lab:nope", "--out", out]) == 1
    assert "unknown lab task 'nope'" in capsys.readouterr().err
    missing = str(tmp_path / "nowhere.jsonl")
    assert visent_main(["inspect", "--model", "tiny:qwen2_5_vl", "--data", missing, "--out", out]) == 1
    assert "nowhere.jsonl" in capsys.readouterr().err
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"id": "x", "response": "a"}\nnot json\n')
    assert visent_main(["inspect", "--model", "tiny:qwen2_5_vl", "--data", "lab:counting:2", "--out", out,
                        "--responses", str(bad)]) == 1
    assert "r.jsonl, line 2: not valid JSON" in capsys.readouterr().err
    bad.write_text('{"id": "x", "response": "a"}\n')
    assert visent_main(["inspect", "--model", "tiny:qwen2_5_vl", "--data", "lab:counting:2", "--out", out,
                        "--responses", str(bad)]) == 1
    assert "no response for example id(s) 'counting-" in capsys.readouterr().err

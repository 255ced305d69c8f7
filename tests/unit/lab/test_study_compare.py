"""visent.lab.study_compare: every comparison of two study summaries, old → new."""

from __future__ import annotations

import json

import pytest

from visent.lab.study_compare import CHANGES, change_word, load_summary, restated_table


def pair(mean: float, lo: float | None, hi: float | None, n: int = 12, warm: int = 3, **extra) -> dict:
    d = {"mean": mean, "se": 1.0, "n": float(n), "n_warm": float(warm), **extra}
    if lo is not None:
        d["ci95"] = [lo, hi]
    return d


@pytest.mark.parametrize(
    ("old", "new", "word"),
    [
        (pair(3.0, 1.0, 5.0), pair(2.0, 0.5, 3.5), "unchanged"),
        (pair(-1.0, -4.0, 2.0), pair(0.5, -2.0, 3.0), "unchanged"),
        (pair(-1.0, -4.0, 2.0), pair(6.0, 2.0, 10.0), "newly distinguishable"),
        (pair(-1.0, -4.0, 2.0), pair(-6.0, -10.0, -2.0), "newly distinguishable"),
        (pair(6.0, 2.0, 10.0), pair(1.0, -2.0, 4.0), "no longer distinguishable"),
        (pair(6.0, 2.0, 10.0), pair(-6.0, -10.0, -2.0), "reversed"),
        # A summary written before intervals were stored: ±2 SE (here 5 ± 2, above zero).
        (pair(5.0, None, None), pair(1.0, -2.0, 4.0), "no longer distinguishable"),
        (pair(3.0, 1.0, 5.0), pair(40.0, None, None, n=1, warm=1, se=float("nan")), "too few runs"),
        (None, pair(1.0, -2.0, 4.0), "new comparison"),
        (pair(1.0, -2.0, 4.0), None, "not rerun"),
    ],
)
def test_change_word_reads_the_two_verdicts(old, new, word):
    assert word in CHANGES
    assert change_word(old, new) == word


def test_change_word_needs_one_side():
    with pytest.raises(ValueError, match="neither"):
        change_word(None, None)


def test_table_has_every_comparison_of_either_study_in_the_order_asked():
    old = {"command": "old cmd", "runs": 24, "pairs": {
        "b|a|0": pair(3.0, 1.0, 5.0), "c|a|0": pair(1.0, -1.0, 3.0), "a|warm-start|0": pair(2.0, -1.0, 5.0),
    }}  # fmt: skip
    new = {"command": "new cmd", "runs": 36, "pairs": {
        "b|a|0": pair(-4.0, -7.0, -1.0, mdd=6.25), "a|warm-start|0": pair(20.0, 10.0, 30.0), "d|a|0.5": pair(0.0, -2.0, 2.0),
    }}  # fmt: skip
    lines = restated_table(old, new, {"a": "A", "b": "B"}, order=["a|warm-start|0", "b|a|0"])
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| comparison")]
    assert [r.split(" | ")[0] for r in rows] == ["| A − warm-start", "| B − A", "| d − A", "| c − A"]
    by = {r.split(" | ")[0][2:]: r.split(" | ") for r in rows}
    assert by["B − A"][2] == "+3.0 [+1.0, +5.0] ↑ (3 × 4)"
    assert by["B − A"][3] == "-4.0 [-7.0, -1.0] ↓ (3 × 4; detects ≥ 6.2)"  # power for the new study only
    assert by["B − A"][4] == "**reversed** |"
    assert by["A − warm-start"][4] == "**newly distinguishable** |"
    assert by["d − A"][1] == "50%" and by["d − A"][2] == "—" and by["d − A"][4] == "new comparison |"
    assert by["c − A"][3] == "—" and by["c − A"][4] == "not rerun |"
    header = next(line for line in lines if line.startswith("Old:"))
    assert "`old cmd` (24 runs)" in header and "`new cmd` (36 runs)" in header
    assert "1 reversed, 1 newly distinguishable, 1 new comparison, 1 not rerun" in header


def test_nothing_to_compare_draws_no_table():
    assert restated_table({"pairs": {}}, {"pairs": {}}) == []


def test_load_summary_names_the_file_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="missing.json: cannot read"):
        load_summary(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        load_summary(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json: no 'pairs'"):
        load_summary(str(tmp_path / "list.json"))
    (tmp_path / "ok.json").write_text(json.dumps({"pairs": {"a|b|0": pair(1.0, 0.5, 1.5)}}))
    assert load_summary(str(tmp_path / "ok.json"))["pairs"]["a|b|0"]["mean"] == 1.0

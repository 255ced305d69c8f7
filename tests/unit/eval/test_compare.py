"""``visent eval compare``: the paired interval against float64 references, pairing, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from visent.data.synthetic import target_response
from visent.eval import cli
from visent.eval.harness import EvalSettings, run_eval
from visent.eval.sources import resolve
from visent.intervals import mcnemar_exact, paired_interval, t_quantile


def _t_quantile_by_integration(p: float, df: int) -> float:
    """Slow reference: integrate the t density on a fine float64 grid and invert the CDF by interpolation."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # substitute t = tan(u) so the heavy tails fit on a finite grid: dt = sec^2(u) du
    u = np.linspace(0.0, math.pi / 2 - 1e-9, 2_000_001)
    t = np.tan(u)
    dens = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) / np.cos(u) ** 2
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(u))])
    return float(np.interp(p, cdf, t))


@pytest.mark.parametrize("df", [1, 2, 3, 7, 25, 200])
def test_t_quantile_matches_numerical_integration_and_closed_forms(df):
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(_t_quantile_by_integration(p, df), rel=2e-5)
    assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df))
    if df == 1:  # Cauchy
        assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    if df == 2:
        assert t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-10)


def _reference_interval(diffs, df_quantile):
    d = np.asarray(diffs, dtype=np.float64)
    half = df_quantile * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def test_paired_interval_against_float64_reference():
    rng = np.random.default_rng(0)
    for n in (2, 3, 40):
        diffs = rng.normal(0.1, 0.3, n).tolist()
        lo, hi = _reference_interval(diffs, _t_quantile_by_integration(0.975, n - 1))
        got = paired_interval(diffs)
        assert got["ci"] == pytest.approx([lo, hi], rel=1e-4, abs=1e-9)
        assert got["mean"] == pytest.approx(np.mean(diffs), abs=1e-15)
    assert paired_interval([0.5])["ci"] is None and paired_interval([])["mean"] is None


def test_binary_paired_difference_is_the_discordant_pair_formula():
    # 100 pairs: 7 where only A is right, 12 where only B is, 81 concordant.
    b_only, a_only, n = 12, 7, 100
    diffs = [1.0] * b_only + [-1.0] * a_only + [0.0] * (n - a_only - b_only)
    mean = (b_only - a_only) / n
    var = (b_only + a_only - n * mean**2) / (n - 1)  # sample variance of a {-1, 0, 1} vector, closed form
    half = _t_quantile_by_integration(0.975, n - 1) * math.sqrt(var / n)
    assert paired_interval(diffs)["ci"] == pytest.approx([mean - half, mean + half], rel=1e-4)
    ref_p = 2 * sum(math.comb(19, i) for i in range(8)) / 2**19
    assert mcnemar_exact(a_only, b_only) == pytest.approx(ref_p, rel=1e-12)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0


def _write_run(folder, rows, settings=None):
    folder.mkdir(parents=True)
    with (folder / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    if settings is not None:
        (folder / "run.json").write_text(json.dumps({"settings": settings}))
    return folder


def _greedy(bench, i, score):
    return {
        "benchmark": bench,
        "id": str(i),
        "task": "math",
        "response": "x",
        "score": score,
        "score_clean": score,
    }


def _sampled(bench, i, scores):
    mean = sum(scores) / len(scores)
    return {
        "benchmark": bench,
        "id": str(i),
        "task": "math",
        "response": "x",
        "score": mean,
        "score_clean": mean,
        "responses": ["x"] * len(scores),
        "scores": scores,
        "scores_clean": scores,
        "k": len(scores),
        "pass": float(max(scores) == 1.0),
        "pass_clean": float(max(scores) == 1.0),
    }


def test_compare_pairs_counts_unpaired_and_matches_a_direct_computation(tmp_path, capsys):
    rng = np.random.default_rng(1)
    geo_a = rng.integers(0, 2, 30).astype(float)
    geo_b = rng.integers(0, 2, 30).astype(float)
    mv_a = rng.integers(0, 2, (20, 4)).astype(float)
    mv_b = rng.integers(0, 2, (20, 4)).astype(float)
    rows_a = [_greedy("geo", i, geo_a[i]) for i in range(30)] + [_greedy("geo", "extra", 1.0)]
    rows_a += [_sampled("mv", i, mv_a[i].tolist()) for i in range(20)] + [_greedy("only-a", 0, 1.0)]
    rows_b = [_greedy("geo", i, geo_b[i]) for i in reversed(range(30))]  # order must not matter
    rows_b += [_sampled("mv", i, mv_b[i].tolist()) for i in range(20)]
    a = _write_run(tmp_path / "a", rows_a, {"model": "base", "max_new_tokens": 512})
    b = _write_run(tmp_path / "b", rows_b, {"model": "tuned", "max_new_tokens": 512})

    assert cli.main(["compare", str(a), str(b), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    geo = result["benchmarks"]["geo"]
    assert geo["n"] == 30 and geo["unpaired_a"] == 1 and geo["unpaired_b"] == 0
    d = geo_b - geo_a
    assert geo["diff"]["ci"] == pytest.approx(
        _reference_interval(d, _t_quantile_by_integration(0.975, 29)), rel=1e-4
    )
    assert geo["discordant"]["a_only"] == int(((geo_a == 1) & (geo_b == 0)).sum())
    mv = result["benchmarks"]["mv"]
    assert mv["a"] == pytest.approx(mv_a.mean()) and mv["k_a"] == [4] and "discordant" not in mv
    assert mv["diff"]["ci"] == pytest.approx(
        _reference_interval(mv_b.mean(1) - mv_a.mean(1), _t_quantile_by_integration(0.975, 19)), rel=1e-4
    )
    assert mv["pass_at_k"]["a"] == pytest.approx(mv_a.max(1).mean())
    assert mv["pass_at_k"]["diff"]["mean"] == pytest.approx(mv_b.max(1).mean() - mv_a.max(1).mean())
    every = np.concatenate([d, mv_b.mean(1) - mv_a.mean(1)])
    assert result["all_examples"]["n"] == 50
    assert result["all_examples"]["diff"]["ci"] == pytest.approx(
        _reference_interval(every, _t_quantile_by_integration(0.975, 49)), rel=1e-4
    )
    macro = result["mean_of_benchmarks"]
    assert macro["diff"]["mean"] == pytest.approx((d.mean() + (mv_b.mean(1) - mv_a.mean(1)).mean()) / 2)
    assert result["only_in_a"] == {"only-a": 1} and result["settings_differ"] == {"model": ["base", "tuned"]}

    assert cli.main(["compare", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert 'settings that differ: model: "base" vs "tuned"' in table
    assert "| geo | 30 | 1/1 |" in table and "| 1/0 |" in table
    assert "| mv | 20 | 4/4 |" in table and "only in A (not compared): only-a (1 rows)" in table


def test_compare_on_two_real_eval_runs(tmp_path, capsys):
    bench = resolve("lab:counting:8")
    wrong = {ex.id for ex in bench.examples[:3]}

    def oracle(examples):
        return [target_response(ex) for ex in examples]

    def worse(examples):
        return ["<answer>999</answer>" if ex.id in wrong else target_response(ex) for ex in examples]

    run_eval([bench], oracle, tmp_path / "a", EvalSettings(model="oracle"), progress=False)
    run_eval([bench], worse, tmp_path / "b", EvalSettings(model="worse"), progress=False)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    blk = json.loads(capsys.readouterr().out)["benchmarks"]["lab-counting"]
    assert blk["n"] == 8 and blk["a"] == 1.0 and blk["b"] == pytest.approx(5 / 8)
    assert blk["discordant"] == {"a_only": 3, "b_only": 0, "mcnemar_p": pytest.approx(0.25)}
    assert blk["diff"]["mean"] == pytest.approx(-3 / 8)
    assert blk["diff"]["ci"] == pytest.approx(
        _reference_interval([-1.0] * 3 + [0.0] * 5, _t_quantile_by_integration(0.975, 7)), rel=1e-4
    )


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    good = _write_run(tmp_path / "good", [_greedy("geo", 0, 1.0), _greedy("geo", 1, 0.0)])
    (tmp_path / "nopred").mkdir()
    _write_run(tmp_path / "empty", [])
    other = _write_run(tmp_path / "other", [_greedy("mmmu", 0, 1.0)])
    bad = _write_run(
        tmp_path / "bad", [_greedy("geo", 0, 1.0), {"benchmark": "geo", "id": "1", "score": "yes"}]
    )
    disjoint = _write_run(tmp_path / "disjoint", [_greedy("geo", 7, 1.0)])
    cases = [
        (tmp_path / "missing", "no such folder"),
        (tmp_path / "nopred", "no predictions.jsonl"),
        (tmp_path / "empty", "no predictions in it"),
        (other, "no benchmark in common"),
        (bad, "line 2: field 'score_clean' is missing"),
        (disjoint, "no example id"),
    ]
    for folder, message in cases:
        assert cli.main(["compare", str(good), str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", str(good)])
    assert info.value.code == 2


def test_a_torn_line_is_reported_not_silently_dropped(tmp_path, capsys):
    a = _write_run(tmp_path / "a", [_greedy("geo", i, 1.0) for i in range(3)])
    b = _write_run(tmp_path / "b", [_greedy("geo", i, 0.0) for i in range(3)])
    with (b / "predictions.jsonl").open("a") as f:
        f.write('{"benchmark": "geo", "id": "3", "sco')
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "B: skipped unreadable predictions.jsonl line(s) 4" in out
    assert "| geo | 3 | 1/1 | 100.0 | 0.0 | -100.0 [-100.0, -100.0] | 3 / 0 |" in out

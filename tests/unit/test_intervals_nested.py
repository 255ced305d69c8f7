"""The nested (warm-start × RL seed) estimator against exact references and simulated data with known truth."""

from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction

import pytest

from visent.intervals import nested_difference, t_quantile


def test_t_quantiles_match_the_printed_tables():
    # Two-sided 95% critical values (any statistics table): df 1, 2, 5, 9, 30, ∞.
    for df, want in ((1, 12.706), (2, 4.303), (5, 2.571), (9, 2.262), (30, 2.042), (math.inf, 1.960)):
        assert t_quantile(0.975, df) == pytest.approx(want, abs=2e-3), df


def _exact_reference(d):
    """The same moments in exact rational arithmetic, written out as the nested-ANOVA table."""
    cells = [[Fraction(x).limit_denominator(10**9) for x in runs.values()] for _, runs in sorted(d.items())]
    W = len(cells)
    means = [sum(c) / len(c) for c in cells]
    grand = sum(means) / W
    ss_within = sum((x - m) ** 2 for c, m in zip(cells, means) for x in c)
    df_within = sum(len(c) - 1 for c in cells)
    var_e = ss_within / df_within
    var_m = sum((m - grand) ** 2 for m in means) / (W - 1)
    inv_s = sum(Fraction(1, len(c)) for c in cells) / W
    var_b = max(Fraction(0), var_m - var_e * inv_s)
    se2 = var_b / W + var_e * inv_s / W
    return float(grand), float(se2), float(var_b), float(var_e), float(var_m)


@pytest.mark.parametrize("seed", range(6))
def test_nested_estimate_equals_the_exact_anova_reference(seed):
    rng = random.Random(seed)
    W = rng.choice([2, 3, 4])
    d = {w: {s: round(rng.gauss(3 * (w - 1), 2.5), 3) for s in range(rng.choice([2, 3, 4, 6]))} for w in range(W)}
    got = nested_difference(d)
    grand, se2, var_b, var_e, _ = _exact_reference(d)
    assert got["mean"] == pytest.approx(grand, abs=1e-9)
    assert got["se"] == pytest.approx(math.sqrt(se2), rel=1e-9)
    assert got["sd_between"] == pytest.approx(math.sqrt(var_b), abs=1e-9)
    assert got["sd_within"] == pytest.approx(math.sqrt(var_e), rel=1e-9)
    df = W - 1 if var_b > 0 else sum(len(r) - 1 for r in d.values())
    assert got["df"] == df
    t = t_quantile(0.975, df)
    assert got["ci95"] == pytest.approx([grand - t * math.sqrt(se2), grand + t * math.sqrt(se2)])
    assert got["n"] == sum(len(r) for r in d.values()) and got["n_warm"] == W


def test_known_answers_on_constructed_data():
    # No spread within a warm-start: the SE is exactly sd(warm-start means)/√W, with W-1 df.
    d = {0: {0: 1.0, 1: 1.0, 2: 1.0}, 1: {0: 5.0, 1: 5.0, 2: 5.0}, 2: {0: 9.0, 1: 9.0, 2: 9.0}}
    got = nested_difference(d)
    assert got["mean"] == 5.0 and got["se"] == pytest.approx(statistics.stdev([1, 5, 9]) / math.sqrt(3))
    assert got["df"] == 2 and got["sd_within"] == 0.0 and got["sd_between"] == pytest.approx(4.0)
    # Identical warm-start means: no between spread, the within spread alone, with W(S-1) df.
    d = {0: {0: 1.0, 1: 3.0}, 1: {0: 3.0, 1: 1.0}, 2: {0: 0.0, 1: 4.0}}
    got = nested_difference(d)
    var_e = (2 + 2 + 8) / 3
    assert got["sd_between"] == 0.0 and got["df"] == 3
    assert got["se"] == pytest.approx(math.sqrt(var_e / 2 / 3))
    assert (got["wins"], got["ties"], got["losses"]) == (5, 1, 0)
    # One warm-start: the ordinary paired standard error over its seeds.
    got = nested_difference({0: {0: 2.0, 1: 4.0, 2: 9.0}})
    assert got["se"] == pytest.approx(statistics.stdev([2, 4, 9]) / math.sqrt(3)) and math.isnan(got["sd_between"])
    assert nested_difference({}) is None


def test_interval_covers_the_true_mean_on_simulated_nested_data_where_the_naive_one_does_not():
    """3 warm-starts × 4 RL seeds drawn from the model with μ = 2, σ_b = 4, σ_e = 2 (points).

    The nested 95% interval must cover μ about 95% of the time; treating the 12 runs as independent
    (sd/√12, normal quantile) covers far less, because the warm-start shift is shared by 4 runs.
    """
    rng = random.Random(17)
    mu, sb, se_, W, S, reps = 2.0, 4.0, 2.0, 3, 4, 3000
    cover = naive_cover = 0
    var_means, se2s = [], []
    for _ in range(reps):
        d = {}
        for w in range(W):
            b = rng.gauss(0, sb)
            d[w] = {s: mu + b + rng.gauss(0, se_) for s in range(S)}
        got = nested_difference(d)
        lo, hi = got["ci95"]
        cover += lo <= mu <= hi
        runs = [x for r in d.values() for x in r.values()]
        m, sd = statistics.mean(runs), statistics.stdev(runs)
        naive_cover += abs(m - mu) <= 1.96 * sd / math.sqrt(len(runs))
        var_means.append(got["mean"])
        se2s.append(got["se"] ** 2)
    true_var = sb**2 / W + se_**2 / (W * S)
    assert 0.93 <= cover / reps <= 0.985
    assert naive_cover / reps < 0.85
    # The SE² is (close to) unbiased for the variance of the mean: truncation at σ_b² = 0 adds a little.
    assert statistics.mean(se2s) == pytest.approx(true_var, rel=0.1)
    assert statistics.variance(var_means) == pytest.approx(true_var, rel=0.1)


def test_prediction_interval_covers_a_new_run():
    rng = random.Random(3)
    mu, sb, se_ = -1.0, 3.0, 2.0
    hits, reps = 0, 2000
    for _ in range(reps):
        d = {w: {s: mu + b + rng.gauss(0, se_) for s in range(4)} for w, b in ((w, rng.gauss(0, sb)) for w in range(3))}
        lo, hi = nested_difference(d)["predict95"]
        new = mu + rng.gauss(0, sb) + rng.gauss(0, se_)
        hits += lo <= new <= hi
    assert 0.92 <= hits / reps <= 0.99


def test_min_detectable_hand_computed_and_limits():
    from visent.intervals import min_detectable, t_quantile

    # No between-warm-start spread: SE = σ_e / √(W·S), df = W − 1 (the estimator's df whenever it
    # measures a between part, which it does by chance about half the time).
    got = min_detectable(0.0, 6.0, 3, 4)
    want = (t_quantile(0.975, 2) + t_quantile(0.8, 2)) * 6.0 / math.sqrt(12)
    assert abs(got - want) < 1e-12
    # With one: the between part does not shrink with more seeds.
    got = min_detectable(2.0, 6.0, 3, 4)
    want = (t_quantile(0.975, 2) + t_quantile(0.8, 2)) * math.sqrt(4 / 3 + 36 / 12)
    assert abs(got - want) < 1e-12
    assert min_detectable(2.0, 6.0, 3, 1000) > (t_quantile(0.975, 2) + t_quantile(0.8, 2)) * 2 / math.sqrt(3)
    assert math.isnan(min_detectable(0.0, 1.0, 1, 1))
    one = min_detectable(float("nan"), 6.0, 1, 4)  # one warm-start: df = S − 1
    assert abs(one - (t_quantile(0.975, 3) + t_quantile(0.8, 3)) * 3.0) < 1e-12
    with pytest.raises(ValueError):
        min_detectable(0.0, 1.0, 0, 4)


def test_smallest_design_is_the_cheapest_design_that_reaches_the_target():
    """Against every design of the grid: the one returned reaches the target, and none with fewer runs
    (or as many runs and fewer warm-starts) does."""
    from visent.intervals import min_detectable, smallest_design

    for sb, se_, target, c in ((0.0, 10.36, 4.0, 1.0), (0.0, 10.36, 4.0, 0.0), (2.0, 8.0, 4.0, 3.0), (1.0, 5.0, 2.5, 1.0)):
        got = smallest_design(sb, se_, target, warm_cost=c, max_warm=40, max_seeds=12)
        reach = [
            (w * s + c * w, w, s) for w in range(2, 41) for s in range(1, 13) if min_detectable(sb, se_, w, s) <= target
        ]
        assert got is not None and reach
        assert (got[0] * got[1] + c * got[0], got[0], got[1]) == min(reach)
    # The between-warm-start part does not shrink with seeds: out of reach within the grid.
    assert smallest_design(10.0, 1.0, 4.0, max_warm=10, max_seeds=20) is None
    with pytest.raises(ValueError):
        smallest_design(0.0, 1.0, 0.0)


def test_min_detectable_has_its_power_in_simulation():
    """A true difference of ``min_detectable`` is found (interval above zero) about 80% of the time."""
    import random

    from visent.intervals import min_detectable, nested_difference

    rng = random.Random(7)
    W, S, sd_b, sd_e = 6, 4, 0.0, 5.0
    mu = min_detectable(sd_b, sd_e, W, S)
    hits = 0
    n = 2000
    for _ in range(n):
        d = {w: {s: mu + rng.gauss(0, sd_e) for s in range(S)} for w in range(W)}
        hits += nested_difference(d)["ci95"][0] > 0
    # Nominal 80% (with df = W − 1 the formula is slightly conservative where the estimator keeps the
    # larger df; with df = W(S − 1) it gave 65%).
    assert 0.78 < hits / n < 0.92


def test_within_at_heldout_scales_only_the_evaluation_part():
    from visent.intervals import within_at_heldout

    assert abs(within_at_heldout(5.0, 3.0, 128, 128) - 5.0) < 1e-12
    assert abs(within_at_heldout(5.0, 3.0, 128, 512) - math.sqrt(16 + 9 / 4)) < 1e-12
    assert abs(within_at_heldout(2.0, 3.0, 100, 100) - 3.0) < 1e-12  # eval noise larger than measured: capped

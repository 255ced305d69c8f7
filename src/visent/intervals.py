"""Confidence intervals, in float64 without scipy: every interval visent reports is computed here.

- ``wilson_interval``: a proportion (greedy accuracy: one 0/1 outcome per example; pass@K);
- ``example_mean_interval``: the mean of per-example scores that each average K samples (avg@K), a
  Student-t interval over examples (the example is the unit of independence);
- ``paired_interval``: the mean of paired differences (two runs on the same examples, or two methods on
  the same seeds), Student t;
- ``mcnemar_exact``: the exact two-sided McNemar test on discordant pairs of 0/1 outcomes;
- ``nested_difference``: a paired difference with two nested sources of spread (warm-starts and RL seeds);
- ``min_detectable`` / ``within_at_heldout``: the power of a nested design (below);
- ``t_cdf`` / ``t_quantile``: Student's t, which all of the above need for small ``df``.

Student's t. 3 warm-starts give df = 2, where the normal quantile would understate the interval by half.
The CDF is computed through the regularised incomplete beta function,

    P(|T| > |t|) = I_x(df/2, 1/2),   x = df / (df + t²),

evaluated by its continued fraction (modified Lentz; converges in a few dozen terms for the df used here),
and a quantile by bisection on the CDF (absolute error < 1e-12). Non-integer ``df`` (Satterthwaite) is
fine; ``df = inf`` is the standard normal.

The nested estimate (``nested_difference``). A lab study trains every method from ``W`` warm-starts (SFT seeds) with ``S`` RL seeds each. The paired
difference of two methods, ``d[w][s] = acc_a(w, s) − acc_b(w, s)`` (same warm-start, same RL seed ⇒ same
prompts, sampling and perturbations), varies for two reasons: the warm-start (a different model starts
RL at a different place; issue #17 found one that started 45 points higher on another CPU) and the RL
seed. Treating all ``W·S`` runs as independent would understate the uncertainty whenever warm-starts
differ, so the estimate follows the nested (one-way random-effects) model

    d[w][s] = μ + b_w + e_ws,   b_w ~ (0, σ_b²) per warm-start,   e_ws ~ (0, σ_e²) per RL run,

estimated by the method of moments (the classical nested ANOVA):

- ``mean`` = the mean of the per-warm-start means ``m_w`` (every warm-start weighs the same);
- ``sd_within`` = √ of the pooled within-warm-start variance (``Σ_w Σ_s (d − m_w)² / Σ_w (S_w − 1)``);
- ``sd_between`` = √ max(0, var(m_w) − σ̂_e² · mean(1/S_w)): the spread of the warm-starts' true means,
  net of the RL-seed noise their sample means carry;
- ``se`` = √ (σ̂_b² / W + σ̂_e² · mean(1/S_w) / W): the standard error of ``mean``. Where σ̂_b² > 0 this is
  exactly ``sd(m_w) / √W`` (the variance of the warm-start means, which contains both sources); where
  the warm-starts differ by less than the seed noise predicts, σ̂_b² is 0 and the within-warm-start
  variance (with its larger degrees of freedom) gives the SE;
- ``df`` = ``W − 1`` when σ̂_b² > 0, else ``Σ (S_w − 1)`` (Satterthwaite's degrees of freedom for the two
  cases); ``ci95`` = ``mean ± t(0.975, df) · se``. With 3 warm-starts that differ, ``t = 4.30``: three
  warm-starts cannot pin a mean down tightly, and the interval says so;
- ``predict95``: where one *new* run (a new warm-start and RL seed) is expected to land,
  ``mean ± t · √(se² + σ̂_b² + σ̂_e²)`` — what ``visent demo``'s single run is compared with.

**Power.** ``min_detectable`` turns measured spreads into the smallest true difference a design of ``W``
warm-starts × ``S`` RL seeds detects with a two-sided 95% test at 80% power:
``(t(0.975, df) + t(0.80, df)) · √(σ_b²/W + σ_e²/(W·S))`` with ``df = W − 1``: the estimator above drops
to ``W − 1`` degrees of freedom whenever its between-warm-start estimate is positive, which by chance
happens in about half of the studies even when σ_b = 0, so the larger ``W(S − 1)`` would promise power
the interval does not have (simulated: 65% instead of 80% at W = 6, S = 4). The held-out set
enters through σ_e: the evaluation's own sampling noise is part of the within-warm-start spread, and
``within_at_heldout`` rescales that part to another held-out size. ``smallest_design`` turns it around:
the cheapest ``(W, S)`` that detects a target difference at measured spreads (what ``visent study``
prints when its worst contrast detects only more than 4 points).

``tests/unit/test_intervals_nested.py`` checks the estimator against an exact-arithmetic reference and its
coverage on simulated nested data with known μ, σ_b, σ_e.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

__all__ = [
    "Z95",
    "example_mean_interval",
    "mcnemar_exact",
    "min_detectable",
    "nested_difference",
    "paired_interval",
    "smallest_design",
    "t_cdf",
    "t_quantile",
    "wilson_interval",
    "within_at_heldout",
]

Z95 = 1.959963984540054  # the 97.5% standard-normal quantile


# -- Student's t ------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz), float64."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        # The even and the odd term of the fraction.
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            step = d * c
            h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` for ``x`` in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast only on one side of the mode; use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom (``inf``: the standard normal)."""
    if not df > 0:
        raise ValueError(f"t_cdf needs df > 0, got {df}")
    if math.isinf(df):
        return NormalDist().cdf(t)
    if t == 0:
        return 0.5
    # x = df / (df + t²) and 1 - x = t² / (df + t²) both formed directly (no cancellation for small t).
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (``0 < p < 1``) of Student's t with ``df > 0`` degrees of freedom.

    ``df = inf`` (or above 1e7, where the two differ by < 1e-7) gives the standard normal's quantile.
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if df > 1e7:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


# -- intervals ---------------------------------------------------------------------------------------------


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (95% by default).

    ``successes`` may be fractional (a mean of scores in [0, 1], e.g. detection IoU rewards); the interval
    is then the usual approximation treating the mean as a proportion. ``n = 0`` gives ``(0, 1)``: nothing
    is known.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def example_mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% interval for the mean of per-example scores in [0, 1], each the mean of its K samples.

    The unit of independence is the example: the K samples of one example share its difficulty, so
    treating the n*K samples as independent would understate the width. The per-example means are
    independent draws from the benchmark, so a Student-t interval over them (n - 1 degrees of freedom)
    is the cluster-robust interval for avg@K. When every example has the same mean (sd 0, e.g. all wrong)
    the t interval collapses to a point; there we report the Wilson interval over the n examples, which
    bounds the variance by p(1 - p) (any score in [0, 1] has at most that variance). Clipped to [0, 1].
    """
    n = len(values)
    if n == 0:
        return 0.0, 1.0
    mean = float(sum(values)) / n
    if n == 1:
        return wilson_interval(mean, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    if var <= 1e-24:
        return wilson_interval(mean * n, n)
    half = t_quantile(0.975, n - 1) * math.sqrt(var / n)
    return max(0.0, mean - half), min(1.0, mean + half)


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences with its Student-t interval.

    Args:
        diffs: per-example differences ``B - A`` (any real numbers).
        level: coverage of the two-sided interval.

    Returns:
        ``{"n", "mean", "sd", "se", "ci": [lo, hi] or None}``; ``ci`` is None for fewer than 2 pairs.
    """
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "se": None, "ci": None}
    mean = math.fsum(diffs) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "se": None, "ci": None}
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "ci": [mean - half, mean + half]}


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(a_only + b_only, 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def nested_difference(d: Mapping[int, Mapping[int, float]]) -> dict[str, float | list[float]] | None:
    """The nested estimate (module docstring) from ``d[warm_seed][rl_seed]`` (points).

    Returns ``{"mean", "se", "df", "ci95": [lo, hi], "predict95": [lo, hi], "sd_between", "sd_within",
    "n" (runs), "n_warm", "warm_seeds", "warm_means" (per warm-start mean, same order), "wins", "ties",
    "losses"}``
    (wins etc. over runs), or ``None`` without data. One warm-start: the between-warm-start spread cannot
    be measured (``sd_between`` NaN) and the SE is the within one; one run per warm-start: the within
    spread cannot be separated, ``se = sd(m_w)/√W``. A single run: ``se`` NaN.
    """
    cells = {w: [float(x) for x in runs.values()] for w, runs in sorted(d.items()) if runs}
    if not cells:
        return None
    W = len(cells)
    means = [sum(v) / len(v) for v in cells.values()]
    mean = sum(means) / W
    runs = [x for v in cells.values() for x in v]
    df_w = sum(len(v) - 1 for v in cells.values())
    ss_w = sum((x - m) ** 2 for v, m in zip(cells.values(), means) for x in v)
    var_e = ss_w / df_w if df_w > 0 else float("nan")
    inv_s = sum(1.0 / len(v) for v in cells.values()) / W
    nan = float("nan")
    if W >= 2:
        var_m = sum((m - mean) ** 2 for m in means) / (W - 1)
        if df_w > 0:
            var_b = max(0.0, var_m - var_e * inv_s)
            if var_b > 0:
                se2, df = var_b / W + var_e * inv_s / W, float(W - 1)
            else:
                se2, df = var_e * inv_s / W, float(df_w)
        else:
            # One run per warm-start: the two sources cannot be told apart; var(m_w) holds both.
            var_b, se2, df = nan, var_m / W, float(W - 1)
    elif df_w > 0:
        var_b, se2, df = nan, var_e * inv_s, float(df_w)
    else:
        var_b, se2, df = nan, nan, nan
    se = nan if math.isnan(se2) else math.sqrt(se2)
    t = t_quantile(0.975, df) if not math.isnan(df) and df > 0 else nan
    # One new run's variance: both components (where one is not measured, the other stands for both).
    parts = [v for v in (var_b, var_e) if not math.isnan(v)]
    if W >= 2 and df_w == 0:
        parts = [var_m]
    run_var = sum(parts) if parts else nan
    pred_half = nan if math.isnan(se) or math.isnan(run_var) else t * math.sqrt(se2 + run_var)
    return {
        "mean": mean,
        "se": se,
        "df": df,
        "ci95": [mean - t * se, mean + t * se],
        "predict95": [mean - pred_half, mean + pred_half],
        "sd_between": nan if math.isnan(var_b) else math.sqrt(var_b),
        "sd_within": nan if math.isnan(var_e) else math.sqrt(var_e),
        "n": float(len(runs)),
        "n_warm": float(W),
        "warm_seeds": [float(w) for w in cells],
        "warm_means": means,
        "wins": float(sum(x > 1e-9 for x in runs)),
        "ties": float(sum(abs(x) <= 1e-9 for x in runs)),
        "losses": float(sum(x < -1e-9 for x in runs)),
    }


def min_detectable(
    sd_between: float, sd_within: float, n_warm: int, n_seeds: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true mean difference (points) the nested design detects (module docstring, *Power*).

    ``sd_between`` NaN (not measured) counts as 0. Returns NaN when the design has no degrees of freedom
    (one warm-start and one seed).
    """
    if n_warm < 1 or n_seeds < 1:
        raise ValueError(f"min_detectable: n_warm and n_seeds must be >= 1, got {n_warm}, {n_seeds}")
    var_b = 0.0 if math.isnan(sd_between) else sd_between**2
    var_e = sd_within**2
    df = float(n_warm - 1) if n_warm >= 2 else float(n_seeds - 1)
    if df <= 0 or math.isnan(var_e):
        return float("nan")
    se = math.sqrt(var_b / n_warm + var_e / (n_warm * n_seeds))
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se


def smallest_design(
    sd_between: float, sd_within: float, target: float, *, warm_cost: float = 1.0, max_warm: int = 50,
    max_seeds: int = 20,
) -> tuple[int, int] | None:
    """The cheapest design ``(W, S)`` whose ``min_detectable`` is at most ``target`` points at these spreads.

    Cost, in RL runs per method: ``W·S + warm_cost·W`` — a warm-start is trained once and shared by every
    method; ``warm_cost`` 1 is about the lab's (a two-phase warm-start ~1.7 runs' time, shared by ≥ 2
    methods). Ties go to fewer warm-starts. ``None`` when no design with ``2 <= W <= max_warm`` and
    ``S <= max_seeds`` reaches ``target`` (e.g. σ_b alone keeps it above).

    What to plan a study's next runs with: the spreads are estimates, so a design picked from a small
    study's spreads may land a little above or below ``target`` once run."""
    if not target > 0 or warm_cost < 0:
        raise ValueError(f"smallest_design: need target > 0 points and warm_cost >= 0, got {target}, {warm_cost}")
    best: tuple[float, int, int] | None = None  # (cost, W, S)
    for w in range(2, max_warm + 1):
        for s in range(1, max_seeds + 1):
            cost = w * s + warm_cost * w
            if best is not None and cost > best[0]:
                break
            if min_detectable(sd_between, sd_within, w, s) <= target:
                if best is None or (cost, w) < best[:2]:
                    best = (cost, w, s)
                break
    return None if best is None else (best[1], best[2])


def within_at_heldout(sd_within: float, sd_eval: float, n_from: int, n_to: int) -> float:
    """The within-warm-start spread if the held-out set had ``n_to`` examples instead of ``n_from``.

    ``sd_eval``: the part of ``sd_within`` that is the evaluation's sampling noise at ``n_from`` (for a
    paired difference of two models on the same examples, √(discordant share / n) · 100); it scales as
    1/√n, the training-seed part does not.
    """
    train = max(0.0, sd_within**2 - sd_eval**2)
    return math.sqrt(train + sd_eval**2 * n_from / n_to)

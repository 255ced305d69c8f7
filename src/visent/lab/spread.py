"""Two sources of spread in a lab comparison: which warm-start RL started from, and which RL seed ran.

A lab study trains every method from ``W`` warm-starts (SFT seeds) with ``S`` RL seeds each. The paired
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
``within_at_heldout`` rescales that part to another held-out size.

``tests/unit/lab/test_spread.py`` checks the estimator against an exact-arithmetic reference and its
coverage on simulated nested data with known μ, σ_b, σ_e.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from visent.student_t import t_quantile

__all__ = ["min_detectable", "nested_difference", "t_quantile", "within_at_heldout"]


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


def within_at_heldout(sd_within: float, sd_eval: float, n_from: int, n_to: int) -> float:
    """The within-warm-start spread if the held-out set had ``n_to`` examples instead of ``n_from``.

    ``sd_eval``: the part of ``sd_within`` that is the evaluation's sampling noise at ``n_from`` (for a
    paired difference of two models on the same examples, √(discordant share / n) · 100); it scales as
    1/√n, the training-seed part does not.
    """
    train = max(0.0, sd_within**2 - sd_eval**2)
    return math.sqrt(train + sd_eval**2 * n_from / n_to)

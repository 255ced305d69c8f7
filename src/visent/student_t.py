"""Student's t distribution in float64 without scipy: the CDF and its quantiles.

The intervals of ``visent eval`` (avg@K over examples), ``visent eval compare`` (paired differences) and the
lab's nested study estimate (``visent.lab.spread``) all need ``t(0.975, df)`` for small ``df`` (3
warm-starts give df = 2, where the normal quantile would understate the interval by half). scipy is not
a dependency, so the CDF is computed through the regularised incomplete beta function,

    P(|T| > |t|) = I_x(df/2, 1/2),   x = df / (df + t²),

evaluated by its continued fraction (modified Lentz; converges in a few dozen terms for the df used here),
and a quantile by bisection on the CDF (absolute error < 1e-12). Non-integer ``df`` (Satterthwaite) is
fine; ``df = inf`` is the standard normal.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

__all__ = ["t_cdf", "t_quantile"]


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

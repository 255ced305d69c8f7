"""The one Student-t implementation against slow float64 references: numerical integration of the density
(any df, including Satterthwaite's non-integer ones) and the closed forms for df = 1 and 2."""

import math

import numpy as np
import pytest

from visent.intervals import t_cdf, t_quantile


def _cdf_by_integration(t: float, df: float) -> float:
    # P(T <= t) = 1/2 + ∫_0^t pdf, Simpson on a fine grid in float64.
    x = np.linspace(0.0, t, 20001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    integral = h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
    return 0.5 + float(integral)


@pytest.mark.parametrize("df", [1.0, 2.0, 2.7, 5.0, 11.0, 40.0])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 6.0])
def test_cdf_matches_integrated_density(t, df):
    assert t_cdf(t, df) == pytest.approx(_cdf_by_integration(t, df), abs=1e-9)
    assert t_cdf(-t, df) == pytest.approx(1.0 - _cdf_by_integration(t, df), abs=1e-9)


def test_quantiles_match_closed_forms_and_invert_the_cdf():
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
        for df in (3.5, 17.0):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)
            assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df))
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959963984540054, abs=1e-9)


def test_bad_arguments_are_refused():
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, float("nan"))):
        with pytest.raises(ValueError):
            t_quantile(p, df)

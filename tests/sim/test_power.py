"""Power analysis of paired seed comparisons (sim/views/stats.py): t quantiles and the minimum
detectable effect, checked against published table values and a simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.views.stats import incomplete_beta, mde_paired, seeds_for_mde, t_cdf, t_quantile


@pytest.mark.parametrize(("q", "df", "table"), [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 5, 2.5706), (0.975, 29, 2.0452),
    (0.8, 1, 1.3764), (0.8, 4, 0.9410), (0.8, 10, 0.8791), (0.95, 3, 2.3534), (0.995, 7, 3.4995)])
def test_t_quantiles_match_the_tables(q, df, table):
    assert t_quantile(q, df) == pytest.approx(table, abs=1e-4)
    assert t_cdf(t_quantile(q, df), df) == pytest.approx(q, abs=1e-9)
    assert t_quantile(1 - q, df) == pytest.approx(-table, abs=1e-4)


def test_incomplete_beta_closed_forms():
    for x in (0.1, 0.5, 0.93):
        assert incomplete_beta(1.0, 1.0, x) == pytest.approx(x)  # uniform
        assert incomplete_beta(2.0, 1.0, x) == pytest.approx(x * x)
        assert incomplete_beta(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)))
    assert t_cdf(0.0, 3) == 0.5 and t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi


def test_mde_formula_and_seeds_needed():
    # (t(0.975, 4) + t(0.8, 4)) * 2 / sqrt(5) = (2.7764 + 0.9410) * 0.8944
    assert mde_paired(2.0, 5) == pytest.approx((2.7764 + 0.9410) * 2 / math.sqrt(5), abs=1e-3)
    assert math.isnan(mde_paired(2.0, 1)) and math.isnan(mde_paired(math.nan, 5))
    n = seeds_for_mde(1.0, 1.5)
    assert mde_paired(1.0, n) <= 1.5 < mde_paired(1.0, n - 1)
    assert seeds_for_mde(1.0, 1e-6, most=50) is None


def test_a_true_effect_of_one_mde_is_detected_about_80_percent_of_the_time():
    """Simulated paired designs: with true mean difference = MDE, the two-sided 95% t test rejects in
    about 80% of experiments (the approximation is slightly conservative for small n)."""
    rng = np.random.default_rng(7)
    n, sd = 8, 1.0
    delta = mde_paired(sd, n)
    crit = t_quantile(0.975, n - 1)
    d = rng.normal(delta, sd, size=(20000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    assert 0.76 <= float(np.mean(np.abs(t) > crit)) <= 0.84

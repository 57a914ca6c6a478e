"""Statistics over seeds: mean ± std and n per policy, and paired differences against a reference.

A comparison run with several seeds gives, per policy, one value of each metric per seed. Two
policies run on the same seed see the same fleet and the same dynamics, so their difference on that
seed removes the fleet's share of the variation: :func:`paired_difference` takes ``d_s = x_s - r_s``
over the seeds ``s`` both have, and gives its mean ``d̄``, its sample standard deviation ``s_d``
(``ddof = 1``) and the 95% Student t interval ``d̄ ± t(0.975, n - 1) · s_d / sqrt(n)`` (the paired
t interval of any statistics textbook: the mean of ``n`` differences, standardised by its
estimated standard error, follows a t distribution with ``n - 1`` degrees of freedom when the
differences are roughly normal). When the interval contains 0 the difference is *within noise*:
these seeds cannot tell the two policies apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# two-sided 95% quantiles t(0.975, df) of Student's t distribution (standard tables); between the
# listed degrees of freedom the quantile is interpolated linearly in 1/df, and above 120 it tends to
# the normal quantile 1.960
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
         19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052,
         28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
_Z975 = 1.960


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"t quantile: degrees of freedom {df}; allowed: 1 or more")
    if df in _T975:
        return _T975[df]
    if df > 120:
        lo, hi, q_lo, q_hi = 120, math.inf, _T975[120], _Z975
    else:
        lo = max(k for k in _T975 if k < df)
        hi = min(k for k in _T975 if k > df)
        q_lo, q_hi = _T975[lo], _T975[hi]
    w = (1 / lo - 1 / df) / (1 / lo - (0 if math.isinf(hi) else 1 / hi))
    return q_lo + w * (q_hi - q_lo)


@dataclass(frozen=True)
class SeedStats:
    """Mean, sample standard deviation (``ddof = 1``; NaN for one value) and count of the finite values."""

    mean: float
    std: float
    n: int


def seed_stats(values: list[float]) -> SeedStats:
    """:class:`SeedStats` of the finite ``values`` (one per seed)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return SeedStats(math.nan, math.nan, 0)
    return SeedStats(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, int(len(v)))


@dataclass(frozen=True)
class Paired:
    """The paired difference ``x - reference`` over seeds: mean, 95% t interval, seeds paired."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def within_noise(self) -> bool:
        """True when the 95% interval contains 0 (or there are too few seeds for one)."""
        return not (self.low > 0 or self.high < 0)


def paired_difference(x: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """``x[s] - reference[s]`` over the seeds ``s`` where both are finite (see the module docstring);
    the interval is NaN below two seeds."""
    d = np.array([x[s] - reference[s] for s in sorted(set(x) & set(reference))
                  if math.isfinite(x[s]) and math.isfinite(reference[s])], dtype=float)
    n = int(len(d))
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return Paired(mean, math.nan, math.nan, n)
    half = t975(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n)

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

Power (:func:`mde_paired`, :func:`seeds_for_mde`): before calling a paired difference "no effect", ask
what the design could have seen. For a two-sided paired t test at level alpha with n seeds and a
paired standard deviation s_d, the smallest true mean difference detected with probability
``power`` is approximately

    MDE = (t(1 - alpha/2, n - 1) + t(power, n - 1)) * s_d / sqrt(n)

(the usual normal-theory approximation with t quantiles in place of z, e.g. Cohen, *Statistical Power
Analysis for the Behavioral Sciences*, 1988, ch. 2; it slightly understates the exact noncentral-t
answer for very small n). Quantiles come from :func:`t_quantile`, which inverts Student's t CDF
written with the regularised incomplete beta function, I_x(a, b), evaluated by its continued fraction
(Lentz's method; Press et al., *Numerical Recipes*, 3rd ed., section 6.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``), to the three
    decimals of the standard tables (:func:`t_quantile`)."""
    return round(t_quantile(0.975, df), 3)


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


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz; converges fast for x < (a + 1) / (a + b + 2))."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df >= 1`` degrees of freedom (bisection on :func:`t_cdf`
    to 1e-10)."""
    if df < 1 or not 0.0 < q < 1.0:
        raise ValueError(f"t quantile: q {q}, degrees of freedom {df}; allowed: 0 < q < 1, df >= 1")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def mde_paired(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable paired mean difference (module docstring) of ``n`` seeds with paired
    standard deviation ``sd``; NaN below two seeds or without a finite ``sd``."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (t_quantile(1.0 - alpha / 2.0, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def seeds_for_mde(sd: float, target: float, alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest seeds (>= 2) whose :func:`mde_paired` is at most ``target``; None when more than
    ``most`` would be needed or ``sd`` is not finite."""
    if not math.isfinite(sd) or target <= 0:
        return None
    for n in range(2, most + 1):
        if mde_paired(sd, n, alpha, power) <= target:
            return n
    return None

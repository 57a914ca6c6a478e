"""The fleet's sparsity constraint (scenario section ``sparsity``) and its projection.

Two constraints on the devices' final pruning ratios p_i, for a target sparsity P:

    per_device:  p_i = P for every device (every device ends at the same sparsity)
    fleet_mean:  sum_i w_i p_i = P  (w_i >= 0, sum w_i = 1: uniform 1/n or data-weighted |D_i|/|D|)
                 lo_i <= p_i <= hi_i,  lo_i = max(P - spread, current p_i, 0),  hi_i = min(P + spread, 0.9)

Under ``fleet_mean`` the server turns the devices' desired final ratios q_i into feasible targets by
the weighted Euclidean projection onto that set,

    p = argmin_p  sum_i w_i (p_i - q_i)^2   s.t.  sum_i w_i p_i = P,  lo_i <= p_i <= hi_i.

Its KKT conditions give p_i(λ) = clip(q_i + λ, lo_i, hi_i) with one common shift λ (the multiplier
of the mean constraint); sum_i w_i p_i(λ) is continuous and non-decreasing in λ, so λ is found by
bisection. Why a projection and not a dual price in the reward: the projection keeps every device's
choice as close as possible to what it asked for while the fleet constraint holds *exactly* every
time it is applied; a price only steers the choices so that the constraint holds on average, and the
final fleet could end above or below P.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Constraint = Literal["per_device", "fleet_mean"]
SparsityWeighting = Literal["uniform", "data"]
MAX_RATIO = 0.9
"""Highest final ratio a device may be given under ``fleet_mean``."""


@dataclass(frozen=True)
class SparsityRule:
    """The run's sparsity constraint as a strategy sees it (from the scenario's ``sparsity`` section).

    ``weights``: per device, summing to 1 (uniform or proportional to local data size)."""

    constraint: Constraint = "per_device"
    spread: float = 0.2
    weights: np.ndarray | None = None  # None: uniform

    def weights_for(self, n: int) -> np.ndarray:
        """The per-device weights w_i (sum 1) for a fleet of ``n`` devices."""
        if self.weights is None:
            return np.full(n, 1.0 / n)
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()

    def bounds(self, target: float, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` per device: lo_i = max(P - spread, p_i, 0), hi_i = max(lo_i, min(P + spread, 0.9))."""
        lo = np.maximum(np.maximum(target - self.spread, np.asarray(current, dtype=float)), 0.0)
        hi = np.maximum(lo, min(target + self.spread, MAX_RATIO))
        return lo, hi

    def ramp_bounds(self, target: float, ramp: float, prev: np.ndarray, step: float, rounds_left: int,
                    movable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """``(lo, hi, mean)`` of one round on the fleet ramp: for the ``movable`` devices (default all)
        lo_i = max(p_i, P - spread - step x rounds_left) (a device can still reach the lowest final ratio)
        and hi_i = max(lo_i, min(p_i + step, P + spread, 0.9)); the others stay at p_i; ``mean`` is this
        round's ramp value ``ramp`` clipped to what the bounds allow, [w . lo, w . hi]."""
        fmin, fmax = self.bounds(target, np.zeros(1))
        floor = float(fmin[0]) - (step * rounds_left if rounds_left else 0.0)  # no inf x 0 when step is unbounded
        m = slice(None) if movable is None else movable
        lo, hi = prev.copy(), prev.copy()
        lo[m] = np.maximum(prev[m], floor)
        hi[m] = np.maximum(lo[m], np.minimum(prev[m] + step, float(fmax[0])))
        w = self.weights_for(len(prev))
        return lo, hi, min(max(ramp, float(w @ lo)), float(w @ hi))


def project_mean(q: np.ndarray, target: float, lo: np.ndarray, hi: np.ndarray,
                 weights: np.ndarray | None = None, iterations: int = 200) -> np.ndarray:
    """The weighted Euclidean projection of ``q`` onto {sum w_i p_i = target, lo <= p <= hi}
    (module docstring): p_i = clip(q_i + λ, lo_i, hi_i), λ by bisection, then the last rounding
    residual spread over the devices strictly inside their bounds so the mean is exact.

    ``q`` already feasible (mean within 1e-12, inside the bounds) is returned unchanged. Raises
    ValueError when the set is empty (sum w lo > target or sum w hi < target)."""
    q, lo, hi = (np.asarray(a, dtype=float) for a in (q, lo, hi))
    w = np.full(len(q), 1.0 / len(q)) if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    if w @ lo > target + 1e-12 or w @ hi < target - 1e-12:
        raise ValueError(f"no ratios in the bounds have mean {target}: bounds give [{w @ lo:.6g}, {w @ hi:.6g}]")
    if abs(w @ q - target) <= 1e-12 and np.all(q >= lo) and np.all(q <= hi):
        return q.copy()
    a, b = float(np.min(lo - q)), float(np.max(hi - q))  # mean(a) <= target <= mean(b)
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        if w @ np.clip(q + mid, lo, hi) < target:
            a = mid
        else:
            b = mid
    p = np.clip(q + 0.5 * (a + b), lo, hi)
    free = (p > lo) & (p < hi)
    if free.any():
        p[free] = np.clip(p[free] + (target - w @ p) / w[free].sum(), lo[free], hi[free])
    return p

"""Pruning schedules: the uniform ramps of the baselines and the feasible window of the bandits.

Uniform schedules (round index t = 0..R-1, target P reached at round R-1 and kept after):

    linear: p(t) = P * min(1, (t + 1) / R)
    cubic:  LoRAPrune's cubic schedule (Zhang et al. 2024, arXiv 2305.18403) with p_0 = 0,
            warm-up fraction w_i and final fraction w_f of the R rounds, u = t + 1:
            p = 0 for u <= w_i R;  p = P for u >= (1 - w_f) R;
            else p = P + (0 - P) * (1 - (u - w_i R) / (R - (w_i + w_f) R))^3

Bandit window (per device, round t, current sparsity p_prev): a bandit may pick any cumulative
ratio in [lo, hi] with step s = max_step_factor * P / R,

    lo = max(p_prev, P - s * (R - 1 - t))      (so P is still reachable by round R-1)
    hi = max(lo, min(P, p_prev + s))           (never more than s per round)

so p never decreases, never jumps more than ``max_step_factor`` times the uniform per-round step, and
equals P from round R-1 on. ``max_step_factor = 1`` leaves exactly the linear ramp; ``None`` (the
bandits' default: p_i^{t-1} <= p_i^t <= P and p_i = P at the end, ``docs/method.md`` section 5) sets no
per-round limit, so a slow device may prune early and a fast one late.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["linear", "cubic"]
RECOVERY_SHARE = 0.2
"""Share of the rounds kept for recovery after the target is reached, when ``reach_target_by`` is unset."""


def reach_round(reach_target_by: int | None, rounds: int) -> int:
    """R, the round count by which an iterative method reaches its target: ``reach_target_by`` when
    set, else ceil((1 - RECOVERY_SHARE) x rounds) (at least 1), so the last fifth of the rounds
    trains the final sparse model instead of jumping to it in the last round."""
    if reach_target_by:
        return int(reach_target_by)
    return max(1, math.ceil((1.0 - RECOVERY_SHARE) * rounds - 1e-9))


def scheduled_ratio(kind: Schedule, t: int, rounds: int, target: float, warmup: float = 0.0,
                    final: float = 0.0) -> float:
    """The uniform cumulative pruning ratio of round ``t`` (see the module docstring)."""
    u = t + 1
    if u >= rounds:
        return target
    if kind == "linear":
        return target * min(1.0, u / rounds)
    lo, hi = warmup * rounds, (1.0 - final) * rounds
    if u <= lo:
        return 0.0
    if u >= hi:
        return target
    frac = (u - lo) / (rounds - (warmup + final) * rounds)
    return float(target - target * (1.0 - frac) ** 3)


def window(t: int, rounds: int, target: float, p_prev: float, max_step_factor: float | None) -> tuple[float, float]:
    """``(lo, hi)``: the cumulative ratios a bandit may choose this round (see the module docstring);
    ``max_step_factor`` None: no per-round limit (lo = p_prev until round R - 1, hi = P)."""
    step = float("inf") if max_step_factor is None else max_step_factor * target / rounds
    lo = max(p_prev, target - step * (rounds - 1 - t))
    if t >= rounds - 1:
        lo = max(p_prev, target)
    hi = max(lo, min(target, p_prev + step))
    return min(lo, 0.95), min(hi, 0.95)

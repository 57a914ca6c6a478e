"""``oracle``: reads the device profiles and equalises predicted completion times (NOT prior-free).

An upper reference for the bandits, not a method from the literature. At every round the oracle
knows each device's current power mode, background load and bandwidth and prices every candidate
plan with the same cost model and the same round-time function the simulator's clock uses
(``ctx.oracle.predict_round_s``, built on :func:`devices.completion.completion_times`).
With the same monotone pruning window as FedSpine (:func:`algorithms.schedule.window`), candidates
are p in {lo, hi} and the ``prune_grid`` ratios of [0, P] inside [lo, hi], times ``ranks``:

    T* = max_i min_{(p, r) candidate for i} T_i(p, r)          (the slowest device at its fastest)
    plan_i = the candidate with T_i(p, r) <= T* (1 + tolerance) of lowest p, then highest r

so every device finishes near the slowest device's best time while keeping as much structure and
rank as that allows; at the target sparsity only the ranks still differ. Plans that do not fit a
device's memory are never chosen (predicted time +inf). Future dynamics (mode switches, bandwidth
changes during the round) are unknown even to the oracle.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from algorithms.schedule import window
from devices.plan import Plan


class OracleParams(CommonParams):
    prune_target: Ratio = 0.3
    reach_target_by: Annotated[int, Field(ge=1)] | None = None
    max_step_factor: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] | None = None
    ranks: list[Rank] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    prune_grid: Annotated[int, Field(ge=2, le=101)] = 11
    tolerance: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.02


@register
class Oracle(Strategy):
    name = "oracle"
    Params = OracleParams
    prior_free = False
    aggregator = "svd"

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        oracle = self.ctx.oracle
        layers, steps, batch = self.plan_shape()
        rounds = p.reach_target_by or self.ctx.rounds
        grid = np.linspace(0.0, p.prune_target, p.prune_grid)
        ranks = sorted(set(p.ranks), reverse=True)
        sel = np.asarray(selected)
        cands: list[list[float]] = []
        for d in sel:
            lo, hi = window(round_index, rounds, p.prune_target, float(view.prune_ratio[d]), p.max_step_factor)
            cands.append(sorted({lo, hi, *[float(g) for g in grid if lo < g < hi]}))
        times: dict[tuple[float, int], np.ndarray] = {}  # (p, r) -> predicted time of every selected device
        for ps in sorted({x for c in cands for x in c}):
            for r in ranks:
                times[(ps, r)] = oracle.predict_round_s(sel, Plan(ps, r, layers, steps, batch))
        best = np.array([min(times[(ps, r)][j] for ps in cands[j] for r in ranks) for j in range(len(sel))])
        finite = best[np.isfinite(best)]
        t_star = float(finite.max()) if len(finite) else np.inf
        out = []
        for j in range(len(sel)):
            choice = None
            for ps in cands[j]:  # lowest p first
                for r in ranks:  # highest rank first
                    if times[(ps, r)][j] <= t_star * (1 + p.tolerance):
                        choice = (ps, r)
                        break
                if choice:
                    break
            if choice is None:  # nothing fits memory: the lightest plan (the device will report OOM)
                choice = (cands[j][-1], ranks[-1])
            out.append(Plan(choice[0], choice[1], layers, steps, batch))
        return out

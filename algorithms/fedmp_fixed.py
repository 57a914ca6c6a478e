"""``fedmp_fixed``: per-device pruning ratios from the first rounds' measured speeds, fixed afterwards.

The simplest thing FedSpine must beat under ``sparsity.constraint: fleet_mean``; after FedMP's idea
(Jiang et al., ICDE 2022) of a different ratio per device for the whole run, without its bandit.
Prior-free: it reads only report durations. For the first ``probe_rounds`` rounds every device follows
the uniform linear ramp to P; then the devices are ranked by their first ok report's duration
(u_i in [0, 1], 0 = fastest, ties by device order) and ask for

    q_i = P + spread * (2 u_i - 1)            (slowest P + spread, fastest P - spread, mean P)

which the server projects onto the fleet-mean set (:func:`algorithms.sparsity.project_mean`; devices
without a report ask for P). The targets T_i are then fixed and every device ramps linearly to its own,
p_i(t) = max(p_i^{t-1}, T_i min(1, (t + 1) / R)). Under ``per_device`` every T_i = P: the uniform ramp.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, RoundReports, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from algorithms.schedule import reach_round, scheduled_ratio
from algorithms.sparsity import project_mean
from devices.plan import Plan


class FedMPFixedParams(CommonParams):
    prune_target: Ratio = 0.3
    rank: Rank = 8
    reach_target_by: Annotated[int, Field(ge=1)] | None = None
    probe_rounds: Annotated[int, Field(ge=1, le=1000)] = Field(1, description="rounds of uniform ramp before the ratios are fixed")


@register
class FedMPFixed(Strategy):
    name = "fedmp_fixed"
    Params = FedMPFixedParams
    aggregator = "svd"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._first_s = np.full(ctx.n_devices, np.nan)  # each device's first ok report duration
        self._targets: np.ndarray | None = None

    def assign(self, view: FleetView) -> np.ndarray:
        """Fixed final ratios from the measured first durations (module docstring)."""
        p, rule = self.params, self.ctx.sparsity
        n = self.ctx.n_devices
        if rule.constraint != "fleet_mean":
            return np.full(n, float(p.prune_target))
        q = np.full(n, float(p.prune_target))
        seen = np.flatnonzero(np.isfinite(self._first_s))
        if len(seen) > 1:
            order = seen[np.argsort(self._first_s[seen], kind="stable")]
            q[order] = p.prune_target + rule.spread * (2 * np.arange(len(order)) / (len(order) - 1) - 1)
        lo, hi = rule.bounds(p.prune_target, view.prune_ratio)
        return project_mean(np.clip(q, lo, hi), p.prune_target, lo, hi, rule.weights_for(n))

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        if self._targets is None and round_index >= p.probe_rounds:
            self._targets = self.assign(view)
        rounds = reach_round(p.reach_target_by, self.ctx.rounds)
        out = []
        for d in selected:
            target = p.prune_target if self._targets is None else float(self._targets[d])
            ratio = scheduled_ratio("linear", round_index, rounds, target)
            out.append(Plan(max(ratio, float(view.prune_ratio[d])), p.rank, layers, steps, batch))
        return out

    def observe(self, round_index: int, reports: RoundReports) -> None:
        ok = (reports.status == "ok") & np.isnan(self._first_s[reports.devices])
        self._first_s[reports.devices[ok]] = reports.duration_s[ok]

    def state(self) -> dict:
        return {**super().state(), "first_s": [None if np.isnan(x) else float(x) for x in self._first_s],
                "targets": None if self._targets is None else [float(x) for x in self._targets]}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self._first_s = np.array([np.nan if x is None else x for x in st["first_s"]], dtype=float)
        self._targets = None if st["targets"] is None else np.asarray(st["targets"], dtype=float)

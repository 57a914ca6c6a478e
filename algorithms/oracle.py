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

Under ``sparsity.constraint: fleet_mean`` the oracle is held to the rules the prior-free policies
follow there: the fleet's mean ratio follows the uniform ramp m(t) = P min(1, (t + 1) / R), and each
device's ratio may rise by at most s = max_step_factor P / R per round (unlimited when unset). Each
round it re-solves the clairvoyant allocation (:meth:`Oracle.allocate`): the smallest ratio that
brings each device under a common round time T, within lo_i = max(p_i^{t-1}, P - spread - s (R-1-t))
and hi_i = min(p_i^{t-1} + s, P + spread, 0.9), with T chosen so the mean ratio is m(t), projected so
it is exactly m(t); then the highest rank that keeps each device within T* (1 + tolerance). With
``max_step_factor`` unset the allocation at round 0 may already hold the final ratios of the slow
devices (their mean is still m(0)); ``pin_targets: true`` restores the earlier rule (final ratios
computed once at round 0 with mean P, each device at its own target from round 0 on).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from algorithms.schedule import reach_round, scheduled_ratio, window
from algorithms.sparsity import MAX_RATIO, project_mean
from devices.plan import Plan


class OracleParams(CommonParams):
    prune_target: Ratio = 0.3
    reach_target_by: Annotated[int, Field(ge=1)] | None = None
    max_step_factor: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] | None = 4.0
    ranks: list[Rank] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    prune_grid: Annotated[int, Field(ge=2, le=101)] = 11
    tolerance: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.02
    pin_targets: bool = Field(False, description="fleet_mean: final ratios fixed at round 0 instead of the per-round ramp allocation")


@register
class Oracle(Strategy):
    name = "oracle"
    Params = OracleParams
    prior_free = False
    aggregator = "svd"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._targets: np.ndarray | None = None  # fleet_mean: each device's final ratio, fixed once computed

    def allocate(self, mean: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Clairvoyant ratios of mean ``mean`` within [lo, hi]: on a grid of ratios g (step 0.005) the
        predicted time of every device at its fastest rank, T_i(g) = min_r T_i(g, r); for a common round
        time T each device gets the smallest g in [lo_i, hi_i] with T_i(g) <= T (hi_i if none); T is
        bisected so the mean ratio is at most ``mean``, then the ratios are projected onto the
        fleet-mean set (:func:`algorithms.sparsity.project_mean`) so the mean is exactly ``mean``."""
        p, rule = self.params, self.ctx.sparsity
        layers, steps, batch = self.plan_shape()
        devs = np.arange(self.ctx.n_devices)
        grid = np.linspace(0.0, MAX_RATIO, 181)
        grid = np.unique(np.concatenate([grid[(grid > lo.min()) & (grid < hi.max())], lo, hi]))
        times = np.array([np.min([self.ctx.oracle.predict_round_s(devs, Plan(float(g), r, layers, steps, batch))
                                  for r in p.ranks], axis=0) for g in grid])  # (grid, device)
        inside = (grid[:, None] >= lo[None, :] - 1e-12) & (grid[:, None] <= hi[None, :] + 1e-12)

        def ratios(t_s: float) -> np.ndarray:
            ok = inside & (times <= t_s)
            first = np.where(ok.any(axis=0), grid[np.argmax(ok, axis=0)], hi)
            return np.clip(first, lo, hi)

        finite = times[np.isfinite(times)]
        a, b = float(finite.min()), float(finite.max())
        w = rule.weights_for(len(devs))
        for _ in range(100):  # mean ratio is non-increasing in T: the smallest T with mean <= target
            mid = 0.5 * (a + b)
            a, b = (mid, b) if w @ ratios(mid) > mean else (a, mid)
        return project_mean(ratios(b), mean, lo, hi, w)

    def fleet_targets(self, view: FleetView) -> np.ndarray:
        """``pin_targets``: final ratios of mean P from the fleet's state at round 0, within
        :meth:`algorithms.sparsity.SparsityRule.bounds`."""
        lo, hi = self.ctx.sparsity.bounds(self.params.prune_target, view.prune_ratio)
        return self.allocate(self.params.prune_target, lo, hi)

    def ramp_ratios(self, round_index: int, view: FleetView) -> np.ndarray:
        """This round's clairvoyant ratios on the fleet ramp (module docstring)."""
        p, rule = self.params, self.ctx.sparsity
        rounds = reach_round(p.reach_target_by, self.ctx.rounds)
        step = np.inf if p.max_step_factor is None else p.max_step_factor * p.prune_target / rounds
        prev = np.asarray(view.prune_ratio, dtype=float)
        ramp = scheduled_ratio("linear", round_index, rounds, p.prune_target)
        lo, hi, mean = rule.ramp_bounds(p.prune_target, ramp, prev, step, max(rounds - 1 - round_index, 0))
        return self.allocate(mean, lo, hi)

    def state(self) -> dict:
        st = super().state()
        if self._targets is not None:
            st["targets"] = [float(x) for x in self._targets]
        return st

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self._targets = np.asarray(st["targets"], dtype=float) if "targets" in st else None

    def targets(self, view: FleetView) -> np.ndarray:
        """Each device's final ratio: P (``per_device``) or :meth:`fleet_targets`, fixed once computed."""
        if self._targets is None:
            fleet_mean = self.ctx.sparsity.constraint == "fleet_mean"
            self._targets = (self.fleet_targets(view) if fleet_mean
                             else np.full(self.ctx.n_devices, float(self.params.prune_target)))
        return self._targets

    def candidates(self, round_index: int, view: FleetView, sel: np.ndarray) -> list[list[float]]:
        """Per selected device, the ratios the oracle may play this round, lowest first: the fleet-ramp
        allocation alone (``fleet_mean``), or the window's ends and the grid inside it."""
        p = self.params
        if self.ctx.sparsity.constraint == "fleet_mean" and not p.pin_targets:
            ratios = self.ramp_ratios(round_index, view)
            return [[float(ratios[d])] for d in sel]
        rounds = reach_round(p.reach_target_by, self.ctx.rounds)
        targets = self.targets(view)
        grid = np.linspace(0.0, float(targets.max()), p.prune_grid)
        cands = []
        for d in sel:
            lo, hi = window(round_index, rounds, float(targets[d]), float(view.prune_ratio[d]), p.max_step_factor)
            cands.append(sorted({lo, hi, *[float(g) for g in grid if lo < g < hi]}))
        return cands

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        oracle = self.ctx.oracle
        layers, steps, batch = self.plan_shape()
        ranks = sorted(set(p.ranks), reverse=True)
        sel = np.asarray(selected)
        cands = self.candidates(round_index, view, sel)
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

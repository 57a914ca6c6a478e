"""``fedspine``: per-device S-UCB over (pruning ratio, LoRA rank), iterative prune-and-tune, SVD aggregation.

FedSpine (Yao et al., arXiv 2501.02438: a per-device bandit picks pruning ratio and LoRA rank without
prior knowledge of the devices; the rest is our reconstruction, ``docs/method.md``). Each round the
server runs one bandit per selected device and hands out the arm it picks as the device's plan: a
cumulative pruning ratio p and a LoRA rank r. The device prunes to p with the LoRA-guided importance,
runs tau LoRA steps (the learner's ``prune_first`` order), and reports its losses, its LoRA update and
its completion time; the server aggregates with ``svd`` (FlexLoRA-style reconstruction of every ΔW,
arXiv 2402.11505) and feeds each device's bandit the reward of :mod:`algorithms.rewards`.

Arm space (``arm_space``; ``docs/method.md`` section 5): the bandit's first coordinate is

* ``cumulative`` (default under ``sparsity.constraint: per_device``): this round's cumulative ratio,
  restricted to the window of :func:`algorithms.schedule.window` (never lower than before, at most
  ``max_step_factor`` x P / R more per round, P from round R - 1 on, R = ``reach_target_by``,
  default ceil(0.8 x rounds)); cells entirely below the window are skipped, the played p is clipped;
* ``target`` (default under ``fleet_mean``): the device's requested final ratio q_i in
  [P - spread, P + spread], which it may choose again every round; the server projects the
  selected devices' requests onto the fleet ramp sum_i w_i p_i^t = P min(1, (t + 1) / R) with
  p_i^{t-1} <= p_i^t <= p_i^{t-1} + step (:meth:`BanditPolicy._project_requests`), so the devices
  asking for the most prune first; the time term then scores the duration predicted at q_i
  (:func:`algorithms.rewards.predicted_times`), since the request's effect on this round's
  duration is scaled down by the ramp;
* ``increment``: the per-round increase in [0, step] (an ablation; measured worse).

Defaults (ours; the paper names λ, s and δ but its values are not public): S-UCB with λ = 0.99, s = 0.3,
δ = 0.05, n_split = 3, untried cells explored from low p up (``untried: low_first``), s relative to the
discounted reward standard deviation (``exploration_scale: reward_std``), the progress term of the
reward off. The earlier defaults (λ = 0.95, s = 1, progress weight 1, cumulative arms, no step
limit, R = rounds) stay reachable by parameters; ``docs/method.md`` sections 5 and 6 give the
measurements behind each change.

Prior-free: the strategy reads the reports and each device's current sparsity, never the device
profiles, types or names (a test runs it against a view that raises on any such access).

``bandit`` may name a discrete policy of :mod:`algorithms.bandits` instead of S-UCB (an ablation):
its arms are ``prune_grid`` ratios evenly spaced in [0, P] x ``ranks``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from algorithms.bandits import BANDITS, make_bandit
from algorithms.bandits.sucb import SUCB, Dim
from algorithms.base import FleetView, RoundReports, Strategy
from algorithms.common import CommonParams, Ratio
from algorithms.registry import register
from algorithms.rewards import RewardSpec, check_reward, compute_rewards, predicted_times
from algorithms.schedule import reach_round, scheduled_ratio, window
from algorithms.sparsity import MAX_RATIO, project_mean
from devices.plan import Plan

BanditName = Literal["sucb", "ucb1", "ducb", "swucb", "exp3", "thompson", "egreedy"]
ArmSpace = Literal["auto", "increment", "target", "cumulative"]


class BanditPolicyParams(CommonParams):
    prune_target: Ratio = Field(0.3, description="target sparsity P (every device's, or the fleet mean's)")
    reach_target_by: Annotated[int, Field(ge=1)] | None = Field(
        None, description="round count R by which p = P (default: ceil(0.8 x training.rounds))")
    arm_space: ArmSpace = "auto"
    max_step_factor: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] | None = 4.0
    bandit: BanditName = "sucb"
    discount: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.99
    exploration: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = 0.3
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.05
    n_split: Annotated[int, Field(ge=1)] = 3
    play: Literal["centre", "uniform"] = "centre"
    untried: Literal["random", "low_first"] = "low_first"
    exploration_scale: Literal["absolute", "reward_std"] = "reward_std"
    prune_grid: Annotated[int, Field(ge=2, le=101)] = 6
    bandit_params: dict[str, Any] = Field(default_factory=dict)
    reward: RewardSpec = Field(default_factory=RewardSpec)


class FedSpineParams(BanditPolicyParams):
    ranks: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)


class BanditPolicy(Strategy):
    """One bandit per device over (cumulative pruning ratio, rank); rewards from the reports."""

    aggregator = "svd"

    def ranks(self) -> list[int]:
        return sorted(set(self.params.ranks))

    @classmethod
    def check_params(cls, params, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        out = super().check_params(params, num_layers, learning)
        out += check_reward(params.reward, learning)
        if params.bandit != "sucb":
            try:
                make_bandit(params.bandit, 2, np.random.default_rng(0), **cls._discrete_params(params))
            except (TypeError, ValueError) as e:
                out.append(("bandit_params", f"{e} (bandit {params.bandit!r}; allowed bandits: sucb, {', '.join(BANDITS)})"))
        return out

    @staticmethod
    def _discrete_params(p) -> dict:
        kw = dict(p.bandit_params)
        if p.bandit == "ducb":
            kw.setdefault("discount", p.discount)
        return kw

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._base = int(ctx.rng.integers(2**63 - 1))
        self._bandits: dict[int, Any] = {}
        self._pending: dict[int, tuple[int, float, float]] = {}  # device -> (arm or cell id, sparsity before, requested final)
        p = self.params
        self._rounds = reach_round(p.reach_target_by, ctx.rounds)
        self._fleet_mean = ctx.sparsity.constraint == "fleet_mean"
        self.arm_space = p.arm_space if p.arm_space != "auto" else ("target" if self._fleet_mean else "cumulative")
        self._p_max = min(p.prune_target + ctx.sparsity.spread, MAX_RATIO) if self._fleet_mean else p.prune_target
        self._step = self.step_limit()
        self._p_dim = (0.0, self._step) if self.arm_space == "increment" else (0.0, self._p_max)
        self._grid = np.linspace(*self._p_dim, p.prune_grid)
        rk = self.ranks()
        self._arms = [(float(g), r) for g in self._grid for r in rk]
        self._targets = np.full(ctx.n_devices, float(p.prune_target))  # fleet_mean + target: each device's final ratio

    def step_limit(self) -> float:
        """s = max_step_factor x P / R, the largest per-round increase of a device's ratio (``increment``
        arms: the arm range [0, s]); with ``max_step_factor`` unset, s = P + spread (one round may do all)."""
        p = self.params
        if p.max_step_factor is None:
            return max(self._p_max, 1e-9)
        return max(p.max_step_factor * p.prune_target / self._rounds, 1e-9)

    def _rng(self, device: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self._base, spawn_key=(device,)))

    def bandit_of(self, device: int):
        b = self._bandits.get(device)
        if b is None:
            p = self.params
            if p.bandit == "sucb":
                lo, hi = self._p_dim
                b = SUCB([Dim(lo, max(hi, 1e-9)), Dim(0.0, 1.0, values=tuple(float(r) for r in self.ranks()))],
                         self._rng(device), discount=p.discount, exploration=p.exploration, delta=p.delta,
                         n_split=p.n_split, play=p.play, untried=p.untried,
                         scale=p.exploration_scale)
            else:
                b = make_bandit(p.bandit, len(self._arms), self._rng(device), **self._discrete_params(p))
            self._bandits[device] = b
        return b

    def _choose(self, device: int, lo: float, hi: float) -> tuple[int, float, int]:
        """(arm or cell id, x, r): the bandit's first coordinate x (a ratio inside the window [lo, hi],
        or an increment in [0, s] when ``lo`` is None) and rank r."""
        b = self.bandit_of(device)
        if self.params.bandit == "sucb":
            point, cell = b.select([lo, None])
            x = float(point[0]) if lo is None else float(min(max(point[0], lo), hi))
            return cell, x, int(round(point[1]))
        if lo is None:
            arm = b.select(np.ones(len(self._arms), dtype=bool))
            g, r = self._arms[arm]
            return arm, float(g), r
        half = (self._grid[1] - self._grid[0]) / 2 if len(self._grid) > 1 else 0.0
        feasible = np.array([(g + half >= lo - 1e-12) and (g - half <= hi + 1e-12) for g, _ in self._arms])
        arm = b.select(feasible)
        g, r = self._arms[arm]
        return arm, float(min(max(g, lo), hi)), r

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        if self.arm_space == "increment":
            ratios, chosen = self._plan_increments(round_index, view, selected)
        elif self._fleet_mean and self.arm_space == "target":
            ratios, chosen = self._plan_targets(round_index, view, selected)
        else:
            ratios, chosen = self._plan_cumulative(round_index, view, selected)
        layers, steps, batch = self.plan_shape()
        out = []
        for d, ratio in zip((int(x) for x in selected), ratios):
            prev = float(view.prune_ratio[d])
            arm, rank, final = chosen[d]
            ratio = max(float(ratio), prev)
            self._pending[d] = (arm, prev, max(final, ratio))
            out.append(Plan(ratio, rank, layers, steps, batch))
        return out

    def _plan_cumulative(self, round_index: int, view: FleetView, selected: np.ndarray):
        """``cumulative`` (and ``target`` under ``per_device``, where every target is P): the arm's
        ratio is this round's cumulative ratio inside :func:`algorithms.schedule.window`."""
        p = self.params
        ratios, chosen = [], {}
        for d in (int(x) for x in selected):
            lo, hi = window(round_index, self._rounds, p.prune_target, float(view.prune_ratio[d]), p.max_step_factor)
            arm, ratio, rank = self._choose(d, lo, hi)
            if self.arm_space == "target":
                ratio = max(lo, min(hi, scheduled_ratio("linear", round_index, self._rounds, p.prune_target)))
            ratios.append(ratio)
            chosen[d] = (arm, rank, -1.0)  # the final ratio is not chosen
        return ratios, chosen

    def _plan_increments(self, round_index: int, view: FleetView, selected: np.ndarray):
        """``increment`` arms: device i asks for p_i^{t-1} + a_i, a_i in [0, s]. ``per_device``: clipped
        into the window of :func:`algorithms.schedule.window` (P by round R). ``fleet_mean``: the
        requests are projected (:func:`algorithms.sparsity.project_mean`) onto the fleet ramp
        sum_i w_i p_i^t = P min(1, (t + 1) / R) within per-device bounds
        lo_i = max(p_i^{t-1}, P - spread - s (R - 1 - t)) and hi_i = min(p_i^{t-1} + s, P + spread, 0.9);
        devices not selected keep their ratio. The fleet's total pruning per round is thus the uniform
        ramp's; the bandits decide how it is shared."""
        p = self.params
        prev = np.asarray(view.prune_ratio, dtype=float)
        sel = [int(x) for x in selected]
        req, chosen = {}, {}
        for d in sel:
            arm, inc, rank = self._choose(d, None, None)
            req[d], chosen[d] = prev[d] + inc, (arm, rank, -1.0)
        if not self._fleet_mean:
            wins = [window(round_index, self._rounds, p.prune_target, prev[d], p.max_step_factor) for d in sel]
            return [min(max(req[d], lo), hi) for d, (lo, hi) in zip(sel, wins)], chosen
        return self._project_requests(round_index, prev, sel, req), chosen

    def _project_requests(self, round_index: int, prev: np.ndarray, sel: list[int], req: dict[int, float]):
        """The fleet-mean projection of :meth:`_plan_increments` (its docstring)."""
        p, rule = self.params, self.ctx.sparsity
        idx = np.array(sel, dtype=int)
        q = prev.copy()
        q[idx] = [req[d] for d in sel]
        ramp = scheduled_ratio("linear", round_index, self._rounds, p.prune_target)
        lo, hi, mean_t = rule.ramp_bounds(p.prune_target, ramp, prev, self._step,
                                          max(self._rounds - 1 - round_index, 0), idx)
        return [float(x) for x in project_mean(q, mean_t, lo, hi, rule.weights_for(len(prev)))[idx]]

    def _plan_targets(self, round_index: int, view: FleetView, selected: np.ndarray):
        """``target`` arms under ``fleet_mean``: each selected device's arm is its desired *final* ratio
        q_i in [lo_i, hi_i] (:meth:`algorithms.sparsity.SparsityRule.bounds`), an arm it can choose
        again every round. This round's ratios are the fleet-ramp projection of those requests
        (:meth:`_project_requests`): the fleet prunes as much as the uniform ramp, and it is the
        devices asking for the highest final ratios that prune first, so a device's choice shows in its
        completion time from the first rounds on."""
        p = self.params
        lo, hi = self.ctx.sparsity.bounds(p.prune_target, view.prune_ratio)
        req, chosen = {}, {}
        for d in (int(x) for x in selected):
            arm, req[d], rank = self._choose(d, float(lo[d]), float(hi[d]))
            chosen[d] = (arm, rank, req[d])
        return self._project_requests(round_index, np.asarray(view.prune_ratio, dtype=float), list(req), req), chosen

    def time_at_target(self) -> bool:
        """Whether the time term scores the time predicted at the requested final ratio
        (``reward.time_at``; ``auto``: with ``target`` arms, when the run gives the model's FLOPs)."""
        how = self.params.reward.time_at
        if how == "auto":
            return self.arm_space == "target" and self._fleet_mean and self.ctx.step_flops is not None
        return how == "target" and self.ctx.step_flops is not None

    def observe(self, round_index: int, reports: RoundReports) -> dict[str, np.ndarray]:
        prev = np.array([self._pending[int(d)][1] for d in reports.devices])
        times = None
        final = np.array([max(self._pending[int(d)][2], pl.prune_ratio) for d, pl in zip(reports.devices, reports.plans)])
        if self.time_at_target():
            at = [dataclasses.replace(pl, prune_ratio=float(q)) for q, pl in zip(final, reports.plans)]
            times = predicted_times(reports, at, self.ctx.step_flops)
        cols = compute_rewards(reports, prev, self.params.prune_target, self.params.reward, self.ctx.learning, times)
        for j, d in enumerate(reports.devices):
            arm = self._pending.pop(int(d))[0]
            rho = cols["reward"][j]
            if np.isfinite(rho):
                self._bandits[int(d)].update(arm, float(rho))
        return cols

    def state(self) -> dict:
        return {**super().state(), "base": self._base, "targets": [float(x) for x in self._targets],
                "bandits": {str(d): b.state() for d, b in sorted(self._bandits.items())}}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self._base = int(st["base"])
        if "targets" in st:
            self._targets = np.asarray(st["targets"], dtype=float)
        self._bandits = {}
        for d, bs in st["bandits"].items():
            self.bandit_of(int(d)).set_state(bs)


@register
class FedSpine(BanditPolicy):
    name = "fedspine"
    Params = FedSpineParams

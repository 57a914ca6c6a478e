"""``fedspine``: per-device S-UCB over (pruning ratio, LoRA rank), iterative prune-and-tune, SVD aggregation.

FedSpine (Yao et al., arXiv 2501.02438: a per-device bandit picks pruning ratio and LoRA rank without
prior knowledge of the devices; the rest is our reconstruction, ``docs/method.md``). Each round the
server runs one bandit per selected device and hands out the arm it picks as the device's plan: a
cumulative pruning ratio p and a LoRA rank r. The device prunes to p with the LoRA-guided importance,
runs tau LoRA steps (the learner's ``prune_first`` order), and reports its losses, its LoRA update and
its completion time; the server aggregates with ``svd`` (FlexLoRA-style reconstruction of every ΔW,
arXiv 2402.11505) and feeds each device's bandit the reward of :mod:`algorithms.rewards`.

Arm space: p in [0, P] (continuous) x r in ``ranks`` (discrete). The arm's p is the cumulative
ratio of this round (our reading; a per-device final ratio is another), restricted to the window of
:func:`algorithms.schedule.window`: never lower than before, at most ``max_step_factor`` x P / R more
per round, and P from round R - 1 = ``reach_target_by`` - 1 on. S-UCB cells entirely below the
window are skipped; the played p is clipped into it.

Defaults (ours; the paper names λ, s and δ but its values are not public): S-UCB with λ = 0.95, s = 1,
δ = 0.05, n_split = 3, plus two choices the sources leave open: untried cells are explored from low p up
(``untried: low_first``; p is irreversible), and s is relative to the discounted reward standard
deviation (``exploration_scale: reward_std``). Measured on paper-fleet-80 (timing only, 3 seeds), these
defaults tie the uniform ``fedapt`` plan on idle time; ``exploration: 0.02`` with ``exploration_scale:
absolute`` and ``reward.time_ref: mean`` lowers it on every seed (69.0% vs 70.6%), since arms' rewards
differ by only a few hundredths.

Prior-free: the strategy reads the reports and each device's current sparsity, never the device
profiles, types or names (a test runs it against a view that raises on any such access).

``bandit`` may name a discrete policy of :mod:`algorithms.bandits` instead of S-UCB (an ablation):
its arms are ``prune_grid`` ratios evenly spaced in [0, P] x ``ranks``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from algorithms.bandits import BANDITS, make_bandit
from algorithms.bandits.sucb import SUCB, Dim
from algorithms.base import FleetView, RoundReports, Strategy
from algorithms.common import CommonParams, Ratio
from algorithms.registry import register
from algorithms.rewards import RewardSpec, check_reward, compute_rewards
from algorithms.schedule import scheduled_ratio, window
from algorithms.sparsity import MAX_RATIO, project_mean
from devices.plan import Plan

BanditName = Literal["sucb", "ucb1", "ducb", "swucb", "exp3", "thompson", "egreedy"]


class BanditPolicyParams(CommonParams):
    prune_target: Ratio = Field(0.3, description="target sparsity P every device reaches")
    reach_target_by: Annotated[int, Field(ge=1)] | None = Field(None, description="round count R by which p = P (default: training.rounds)")
    max_step_factor: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] | None = None
    bandit: BanditName = "sucb"
    discount: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.95
    exploration: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = 1.0
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
        self._pending: dict[int, tuple[int, float]] = {}  # device -> (arm or cell id, sparsity before the round)
        p = self.params
        self._rounds = p.reach_target_by or ctx.rounds
        self._fleet_mean = ctx.sparsity.constraint == "fleet_mean"
        self._p_max = min(p.prune_target + ctx.sparsity.spread, MAX_RATIO) if self._fleet_mean else p.prune_target
        self._grid = np.linspace(0.0, self._p_max, p.prune_grid)
        rk = self.ranks()
        self._arms = [(float(g), r) for g in self._grid for r in rk]
        self._targets = np.full(ctx.n_devices, float(p.prune_target))  # fleet_mean: each device's final ratio

    def _rng(self, device: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self._base, spawn_key=(device,)))

    def bandit_of(self, device: int):
        b = self._bandits.get(device)
        if b is None:
            p = self.params
            if p.bandit == "sucb":
                b = SUCB([Dim(0.0, max(self._p_max, 1e-9)), Dim(0.0, 1.0, values=tuple(float(r) for r in self.ranks()))],
                         self._rng(device), discount=p.discount, exploration=p.exploration, delta=p.delta,
                         n_split=p.n_split, play=p.play, untried=p.untried,
                         scale=p.exploration_scale)
            else:
                b = make_bandit(p.bandit, len(self._arms), self._rng(device), **self._discrete_params(p))
            self._bandits[device] = b
        return b

    def _choose(self, device: int, lo: float, hi: float) -> tuple[int, float, int]:
        """(arm or cell id, p, r) inside the window [lo, hi]."""
        b = self.bandit_of(device)
        if self.params.bandit == "sucb":
            point, cell = b.select([lo, None])
            return cell, float(min(max(point[0], lo), hi)), int(round(point[1]))
        half = (self._grid[1] - self._grid[0]) / 2 if len(self._grid) > 1 else 0.0
        feasible = np.array([(g + half >= lo - 1e-12) and (g - half <= hi + 1e-12) for g, _ in self._arms])
        arm = b.select(feasible)
        g, r = self._arms[arm]
        return arm, float(min(max(g, lo), hi)), r

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        if self._fleet_mean:
            return self._plan_fleet_mean(round_index, view, selected)
        p = self.params
        layers, steps, batch = self.plan_shape()
        out = []
        for d in selected:
            d = int(d)
            prev = float(view.prune_ratio[d])
            lo, hi = window(round_index, self._rounds, p.prune_target, prev, p.max_step_factor)
            arm, ratio, rank = self._choose(d, lo, hi)
            self._pending[d] = (arm, prev)
            out.append(Plan(max(ratio, prev), rank, layers, steps, batch))
        return out

    def _plan_fleet_mean(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        """``sparsity.constraint: fleet_mean``: each selected device's arm is its desired *final* ratio
        q_i in [lo_i, hi_i] (:meth:`algorithms.sparsity.SparsityRule.bounds`); the server projects all
        devices' targets (unselected ones keep theirs) onto the fleet-mean set
        (:func:`algorithms.sparsity.project_mean`), and each device prunes along the linear ramp to its
        own target, p_i(t) = max(p_i^{t-1}, T_i min(1, (t + 1) / R))."""
        p = self.params
        layers, steps, batch = self.plan_shape()
        rule = self.ctx.sparsity
        lo, hi = rule.bounds(p.prune_target, view.prune_ratio)
        q = self._targets.copy()
        chosen: dict[int, tuple[int, int]] = {}
        for d in (int(x) for x in selected):
            arm, q[d], rank = self._choose(d, float(lo[d]), float(hi[d]))
            chosen[d] = (arm, rank)
        self._targets = project_mean(q, p.prune_target, lo, hi, rule.weights_for(len(q)))
        out = []
        for d, (arm, rank) in chosen.items():
            prev = float(view.prune_ratio[d])
            self._pending[d] = (arm, prev)
            ratio = scheduled_ratio("linear", round_index, self._rounds, float(self._targets[d]))
            out.append(Plan(max(ratio, prev), rank, layers, steps, batch))
        return out

    def observe(self, round_index: int, reports: RoundReports) -> dict[str, np.ndarray]:
        prev = np.array([self._pending[int(d)][1] for d in reports.devices])
        cols = compute_rewards(reports, prev, self.params.prune_target, self.params.reward, self.ctx.learning)
        for j, d in enumerate(reports.devices):
            arm, _ = self._pending.pop(int(d))
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

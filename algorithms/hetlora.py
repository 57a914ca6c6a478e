"""``hetlora``: heterogeneous per-device LoRA ranks, zero-padding aggregation, rank self-pruning, no pruning.

HetLoRA (Cho et al., "Heterogeneous LoRA for federated fine-tuning of on-device foundation models",
2024, arXiv 2401.06432): each device trains LoRA at its own rank; the server zero-pads
the factors to the largest rank and averages B and A separately with sparsity weights
||ΔW_i||_F / Σ_j ||ΔW_j||_F (``zero_pad``), and sends each device the global factors truncated to its
rank (``truncate``). During local training a device self-prunes its rank: it keeps the first
floor(gamma r) components when the tail carries less than ``rank_prune_tol`` of its update's norm
(done by the learner; the rank it uploaded comes back in the ``lora_rank_reported`` column), and
its rank never grows again.

HetLoRA assigns the initial ranks from the devices' capacities. Prior-free here (``rank_by: speed``):
round 0 uses ``initial_rank`` for every device; a device's rank is then set once, from the quantile
of its first reported step time among the devices seen so far (fastest quantile: largest rank).
``rank_by: random`` draws it uniformly from ``ranks`` instead. No structured pruning: the unpruned
reference of the FedSpine paper.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from algorithms.base import Aggregator, FleetView, RoundReports, Strategy, declared
from algorithms.capacity import StepTimes, rank_tiers
from algorithms.common import CommonParams, Rank
from algorithms.registry import register
from devices.plan import Plan


class HeteroRankParams(CommonParams):
    ranks: list[Rank] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    rank_by: Literal["speed", "random"] = "speed"
    initial_rank: Rank | None = None


class HetLoRAParams(HeteroRankParams):
    aggregator: Aggregator = "zero_pad"
    rank_prune_decay: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.75
    rank_prune_tol: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1


class HeteroRank(Strategy):
    """Per-device ranks assigned once from the first reported step time (or at random)."""

    @classmethod
    def check_params(cls, params, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        out = super().check_params(params, num_layers, learning)
        if params.aggregator == "fedavg" and declared(params, "rank_prune_decay", 1.0) < 1.0:
            out.append(("aggregator", "'fedavg' needs equal ranks, but rank self-pruning (rank_prune_decay < 1) "
                                      "makes them differ; use 'zero_pad' or 'svd'"))
        if params.initial_rank is not None and params.initial_rank not in params.ranks:
            out.append(("initial_rank", f"{params.initial_rank} is not one of ranks {params.ranks}"))
        return out

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.times = StepTimes(ctx.n_devices)
        self.rank = np.zeros(ctx.n_devices, dtype=np.int64)  # 0 = not assigned yet

    def initial_rank(self) -> int:
        return self.params.initial_rank or min(self.params.ranks)

    def plan_for(self, rank: int, layers, steps: int, batch: int) -> Plan:
        return Plan(0.0, rank, layers, steps, batch)

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        if p.rank_by == "random":
            new = [int(d) for d in selected if self.rank[d] == 0]
            self.rank[new] = self.ctx.rng.choice(np.array(sorted(p.ranks)), size=len(new))
        out = []
        for d in selected:
            r = int(self.rank[d]) or self.initial_rank()
            out.append(self.plan_for(r, layers, steps, batch))
        return out

    def observe(self, round_index: int, reports: RoundReports):
        ok = self.times.observe(reports)
        if self.params.rank_by == "speed":
            fresh = [int(reports.devices[j]) for j in ok if self.rank[int(reports.devices[j])] == 0]
            if fresh:
                known = np.flatnonzero(np.isfinite(self.times.step_s))
                tiers = dict(zip(known.tolist(), rank_tiers(self.times.step_s[known], self.params.ranks).tolist()))
                for d in fresh:
                    self.rank[d] = tiers[d]

    def state(self) -> dict:
        return {**super().state(), "rank": self.rank.tolist(), "step_s": self.times.step_s.tolist()}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self.rank = np.array(st["rank"], dtype=np.int64)
        self.times.step_s = np.array(st["step_s"], dtype=float)


@register
class HetLoRA(HeteroRank):
    name = "hetlora"
    Params = HetLoRAParams
    aggregator = "zero_pad"
    resize = "truncate"

    def plan_for(self, rank: int, layers, steps: int, batch: int) -> Plan:
        p = self.params
        return Plan(0.0, rank, layers, steps, batch, rank_prune_decay=p.rank_prune_decay, rank_prune_tol=p.rank_prune_tol)

    def observe(self, round_index: int, reports: RoundReports):
        super().observe(round_index, reports)
        got = reports.extra.get("lora_rank_reported")
        if got is not None:
            for j in np.flatnonzero((np.asarray(reports.status) == "ok") & np.isfinite(got)):
                if got[j] < reports.plans[j].lora_rank:  # the device self-pruned: its rank never grows back
                    d = int(reports.devices[j])
                    current = int(self.rank[d]) or self.initial_rank()
                    self.rank[d] = max(1, min(current, int(got[j])))

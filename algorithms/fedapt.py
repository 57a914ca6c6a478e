"""``fedapt``: iterative prune-and-tune with one uniform (p schedule, r) for every device.

"FedAPT (iterative)", a baseline named in FedSpine's evaluation (arXiv 2501.02438) without a public
definition; ours (``docs/method.md`` section 7) is FedSpine without the bandit. Every device follows
the same cumulative pruning schedule (``linear`` ramp, or LoRAPrune's ``cubic`` one, see
:mod:`algorithms.schedule`) to the target by round ``reach_target_by`` and trains at one rank; each
round it prunes with the LoRA-guided importance, then runs tau LoRA steps; ``svd`` aggregation.
The "uniform configuration" whose idle time FedSpine's motivation puts at about 30 % of a round.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from algorithms.schedule import Schedule, reach_round, scheduled_ratio
from devices.plan import Plan


class FedAPTParams(CommonParams):
    prune_target: Ratio = 0.3
    rank: Rank = 8
    reach_target_by: Annotated[int, Field(ge=1)] | None = None
    schedule: Schedule = "linear"
    warmup: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    final: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0


@register
class FedAPT(Strategy):
    name = "fedapt"
    Params = FedAPTParams
    aggregator = "svd"

    @classmethod
    def check_params(cls, params, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        out = super().check_params(params, num_layers, learning)
        if params.warmup + params.final >= 1:
            out.append(("final", f"warmup + final must be below 1, got {params.warmup} + {params.final}"))
        return out

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        ratio = scheduled_ratio(p.schedule, round_index, reach_round(p.reach_target_by, self.ctx.rounds), p.prune_target,
                                p.warmup, p.final)
        return [Plan(max(ratio, float(view.prune_ratio[d])), p.rank, layers, steps, batch) for d in selected]

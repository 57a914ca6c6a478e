"""``fixed``: one plan for every device, with the pruning ratio ramped linearly to a target.

    p_t = target * min(1, (t + 1) / ramp_rounds)   (ramp_rounds defaults to ceil(0.8 x training.rounds),
                                                   :func:`algorithms.schedule.reach_round`)

so the fleet reaches the target sparsity at round ramp_rounds - 1 and stays there. Rank, LoRA
depth, local steps and batch are the same for all devices: the "uniform configuration" against
which FedSpine's per-device choices are measured (its motivation: with one configuration for all,
the strongest board idles while the weakest finishes; arXiv 2501.02438).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams
from algorithms.registry import register
from algorithms.schedule import reach_round
from devices.plan import Plan


class FixedParams(CommonParams):
    prune_target: Annotated[float, Field(ge=0, le=0.95, allow_inf_nan=False)] = 0.0
    ramp_rounds: Annotated[int, Field(ge=1)] | None = None
    rank: Annotated[int, Field(ge=1, le=4096)] = 8


@register
class FixedStrategy(Strategy):
    name = "fixed"
    Params = FixedParams
    aggregator = "svd"

    def prune_at(self, round_index: int) -> float:
        p: FixedParams = self.params
        ramp = reach_round(p.ramp_rounds, self.ctx.rounds)
        return p.prune_target * min(1.0, (round_index + 1) / ramp)

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p: FixedParams = self.params
        layers, steps, batch = self.plan_shape()
        target = self.prune_at(round_index)
        cache: dict[float, Plan] = {}
        out = []
        for d in selected:
            ratio = max(target, float(view.prune_ratio[d]))  # a device that is already sparser stays so
            plan = cache.get(ratio)
            if plan is None:
                plan = cache[ratio] = Plan(ratio, p.rank, layers, steps, batch)
            out.append(plan)
        return out

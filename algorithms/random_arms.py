"""``random``: every selected device gets an arm drawn uniformly from a configured arm set.

Arms are (pruning ratio, rank) pairs from ``prune_ratios x ranks``. Pruning is monotone: a device
keeps max(its current sparsity, the drawn ratio). With ``reach_target_by`` set, the ratio is at
least the linear ramp ``max(prune_ratios) * (t + 1) / reach_target_by``, so every device ends at the
largest ratio. Draws come from the strategy's own named stream.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams
from algorithms.registry import register
from devices.plan import Plan


class RandomParams(CommonParams):
    prune_ratios: list[Annotated[float, Field(ge=0, le=0.95, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], min_length=1)
    ranks: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    reach_target_by: Annotated[int, Field(ge=1)] | None = None


@register
class RandomStrategy(Strategy):
    name = "random"
    Params = RandomParams
    aggregator = "svd"

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p: RandomParams = self.params
        ratios = np.array(p.prune_ratios, dtype=float)
        ranks = np.array(p.ranks, dtype=np.int64)
        n = len(selected)
        ri = self.ctx.rng.integers(0, len(ratios), size=n)
        ki = self.ctx.rng.integers(0, len(ranks), size=n)
        floor = 0.0
        if p.reach_target_by:
            floor = float(ratios.max()) * min(1.0, (round_index + 1) / p.reach_target_by)
        layers, steps, batch = self.plan_shape()
        out = []
        for j, d in enumerate(selected):
            ratio = max(float(ratios[ri[j]]), float(view.prune_ratio[d]), floor)
            out.append(Plan(ratio, int(ranks[ki[j]]), layers, steps, batch))
        return out

"""``fedlora_then_prune``: FedLoRA first, then one-shot pruning to the target and a short recovery.

The sequential "FedLoRA+Prune" / "FT-then-Prune" baseline named in FedSpine's evaluation (arXiv
2501.02438; this definition is ours, ``docs/method.md`` section 7). Rounds 0 .. k-1 are FedLoRA on the
full backbone (p = 0); at round k = ``prune_round`` (default: rounds - ``recovery_rounds``) every device
removes the target share of heads and FFN channels at once, ranked by the LoRA-guided importance it has
been averaging while it trained, and the remaining rounds recover with LoRA at the pruned size.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from devices.plan import Plan


class FedLoRAThenPruneParams(CommonParams):
    prune_target: Ratio = 0.3
    rank: Rank = 8
    pruner: Literal["comp"] | None = None  # None: learning.importance.criterion; comp: COMP neurons + mask tuning
    prune_round: Annotated[int, Field(ge=0)] | None = None
    recovery_rounds: Annotated[int, Field(ge=1)] | None = None


@register
class FedLoRAThenPrune(Strategy):
    name = "fedlora_then_prune"
    Params = FedLoRAThenPruneParams
    aggregator = "svd"

    def prune_round(self) -> int:
        p = self.params
        if p.prune_round is not None:
            return p.prune_round
        recovery = p.recovery_rounds or max(1, self.ctx.rounds // 5)
        return max(0, self.ctx.rounds - recovery)

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        target = p.prune_target if round_index >= self.prune_round() else 0.0
        return [Plan(max(target, float(view.prune_ratio[d])), p.rank, layers, steps, batch, pruner=p.pruner)
                for d in selected]

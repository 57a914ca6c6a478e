"""``prune_then_fedlora``: one-shot structured pruning to the target before training, then FedLoRA.

The sequential "Prune+FedLoRA" / "Prune-then-FT" baseline named in FedSpine's evaluation (arXiv
2501.02438; this definition is ours, ``docs/method.md`` section 7; one-shot as in LLM-Pruner, arXiv
2305.11627, and LoRAPrune, arXiv 2305.18403). Every device's first plan already has p = P: with real
learning the learner measures the LoRA-guided importance on ``learning.importance.calibration_batches``
gradient-only batches of the device's own data (a small calibration pass, before any optimiser step) and
removes the least important heads and FFN channels at once; then all rounds are LoRA fine-tuning at one
rank on the pruned model.

Aggregation defaults to ``svd`` (masked element-wise averaging of ΔW over the devices that keep each
structure): devices prune different groups, and plain FedAvg of factors would average in zeros.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from devices.plan import Plan


class PruneThenFedLoRAParams(CommonParams):
    prune_target: Ratio = 0.3
    rank: Rank = 8
    pruner: Literal["comp"] | None = None  # None: learning.importance.criterion; comp: COMP neurons + mask tuning


@register
class PruneThenFedLoRA(Strategy):
    name = "prune_then_fedlora"
    Params = PruneThenFedLoRAParams
    aggregator = "svd"

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        return [Plan(max(p.prune_target, float(view.prune_ratio[d])), p.rank, layers, steps, batch, pruner=p.pruner)
                for d in selected]

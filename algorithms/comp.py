"""``comp``: one-shot COMP pruning on every device before training, then FedLoRA.

COMP (Xu et al. 2025, arXiv 2501.15255; ``learning/comp.py``) is a post-training structured pruner:
whole blocks first, then neurons inside the remaining blocks by a matrix-condition-based score, then
mask tuning instead of fine-tuning. This baseline is ``prune_then_fedlora`` with COMP as the pruner:
every device's first plan already carries the final ratios, so with real learning each device runs
COMP once on ``learning.importance.calibration_batches`` batches of its own data (forward passes only)
and all rounds are then LoRA fine-tuning on the pruned model (the definition is ours).

Ratios: ``prune_target`` P is the share of block parameters removed in total; COMP splits it
[inferred: the abstract gives no split] into a layer ratio ρ_l = ``layer_share`` · P and a neuron ratio
ρ_n = 1 − (1 − P)/(1 − ρ_l) (``devices.plan.split_total_ratio``), so (1 − ρ_l)(1 − ρ_n) = 1 − P.
``layer_ratio`` and ``neuron_ratio`` given together replace the split. The cost model prices the
removed blocks (``devices.cost``), the learner removes ``groups_to_remove(ρ_l, L_proxy)`` proxy blocks.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from algorithms.base import FleetView, Strategy
from algorithms.common import CommonParams, Rank, Ratio
from algorithms.registry import register
from devices.plan import Plan, split_total_ratio


class CompParams(CommonParams):
    prune_target: Ratio = 0.3
    layer_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5
    layer_ratio: Ratio | None = None
    neuron_ratio: Ratio | None = None
    rank: Rank = 8

    @model_validator(mode="after")
    def _both_or_neither(self) -> "CompParams":
        if (self.layer_ratio is None) != (self.neuron_ratio is None):
            raise ValueError("layer_ratio and neuron_ratio go together (or neither: prune_target is split)")
        return self


@register
class Comp(Strategy):
    name = "comp"
    Params = CompParams
    aggregator = "svd"

    def ratios(self) -> tuple[float, float]:
        """(layer ratio, neuron ratio) every device prunes to."""
        p = self.params
        if p.layer_ratio is not None:
            return p.layer_ratio, p.neuron_ratio
        return split_total_ratio(p.prune_target, p.layer_share)

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        layer_ratio, neuron_ratio = self.ratios()
        return [Plan(max(neuron_ratio, float(view.prune_ratio[d])), p.rank, layers, steps, batch,
                     layer_ratio=layer_ratio, pruner="comp") for d in selected]

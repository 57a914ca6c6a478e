"""``splitfed``: split federated learning, the same batch for every device, no feature merging.

SplitFed (Thapa et al., arXiv 2004.12088) cuts the model after block k: each device trains the bottom
(here: the embeddings and the bottom k blocks with their LoRA adapters) on its own data, sends the
cut-layer features to the server every step, and receives their gradients back; the server trains the
top (the other blocks, their adapters and the head). Once per round the devices' bottom adapters are
averaged (FedAvg, weighted by data size). Without merging, the server serves each device's features on
their own (one top copy per device, SplitFed V1), so a device never waits for another within a round.
The round's timing is in ``sim/split_round.py``, the step's cost in ``devices/split_cost.py``.

The plain baseline MergeSFL (``algorithms/mergesfl.py``, arXiv 2311.13348) is measured against: every
device gets the run's batch size and rank-r LoRA on the layers ``lora_depth`` names (default all).
``split_layers`` defaults to a quarter of the blocks, at least one [inferred: the papers cut CNNs after
their first layers; no transformer split point is given].
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from algorithms.base import Aggregator, FleetView, Strategy, StrategyContext, declared
from algorithms.common import CommonParams, Rank
from algorithms.registry import register
from devices.plan import Plan


class SplitParams(CommonParams):
    rank: Rank = 8
    aggregator: Aggregator = "fedavg"
    split_layers: Annotated[int, Field(ge=1)] | None = None


def default_split_layers(num_layers: int) -> int:
    """The split point when none is given: a quarter of the blocks on the device, at least one [inferred]."""
    return max(1, num_layers // 4)


class SplitStrategy(Strategy):
    """What the split-learning strategies share: the split point, the checks, one plan per batch size."""

    split = True
    aggregator = "fedavg"
    merge_features = False

    def __init__(self, params: BaseModel, ctx: StrategyContext):
        super().__init__(params, ctx)
        self.split_layers = params.split_layers or default_split_layers(ctx.num_layers)
        self._plans: dict[int, Plan] = {}

    @classmethod
    def check_params(cls, params: BaseModel, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        """The split point must leave a block on the server."""
        out = super().check_params(params, num_layers, learning)
        k = declared(params, "split_layers")
        if k is not None and k >= num_layers:
            out.append(("split_layers", f"{k} leaves no block on the server (the model has {num_layers}); "
                                        f"allowed: 1 to {num_layers - 1}"))
        return out

    def plan_for(self, batch_size: int) -> Plan:
        """The split plan with ``batch_size`` samples per step (one object per batch size)."""
        plan = self._plans.get(batch_size)
        if plan is None:
            layers, steps, _ = self.plan_shape()
            plan = self._plans[batch_size] = Plan(0.0, self.params.rank, layers, steps, batch_size,
                                                  split_layers=self.split_layers,
                                                  merge_features=self.merge_features)
        return plan


@register
class SplitFed(SplitStrategy):
    name = "splitfed"
    Params = SplitParams

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        """The run's batch size for every device, no merging."""
        return [self.plan_for(self.plan_shape()[2])] * len(selected)

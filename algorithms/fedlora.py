"""``fedlora``: FedAvg over LoRA adapters at one rank for every device, no pruning.

The plain federated LoRA baseline (FedIT, Zhang et al., arXiv 2305.05644; "FedLoRA" in FedSpine's
evaluation): every device trains rank-r LoRA on the full frozen backbone for tau steps; the server averages the B and
A factors separately, weighted by data size (``fedavg``). An accuracy upper reference and the
slowest configuration (no structure is ever removed).
"""

from __future__ import annotations

import numpy as np

from algorithms.base import Aggregator, FleetView, Strategy
from algorithms.common import CommonParams, Rank
from algorithms.registry import register
from devices.plan import Plan


class FedLoRAParams(CommonParams):
    rank: Rank = 8
    aggregator: Aggregator = "fedavg"


@register
class FedLoRA(Strategy):
    name = "fedlora"
    Params = FedLoRAParams
    aggregator = "fedavg"

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        layers, steps, batch = self.plan_shape()
        plan = Plan(0.0, p.rank, layers, steps, batch)
        return [plan] * len(selected)

"""``legend``: per-device LoRA depth and per-layer ranks from a greedy capacity rule, no pruning.

After LEGEND (Liu et al., arXiv 2412.20004, public at abstract level only): LoRA layers with higher
ranks near the output save resources at comparable accuracy, so each device gets a LoRA *depth*
(the number of layers carrying LoRA, counted from the output) and a *rank distribution* over those
layers, chosen from its estimated capacity. LEGEND's LCD algorithm is only public at TL;DR level;
this is our greedy rule, prior-free (capacity from reported step times, :mod:`algorithms.capacity`):

1. Round 0, and any device not yet heard from: depth ``initial_depth`` (default ceil(L/2)) and
   ``ranks``' middle value on every LoRA layer.
2. Per-layer time unit of device i from its last ok report: a_i = t_step,i / (L + 2 d_i) (forward
   through all L layers, backward -- about twice the forward -- through its d_i LoRA layers).
3. Time budget: T* = the ``budget_quantile`` quantile over known devices of a_i (L + 2 d_min).
   Depth: the largest d in [d_min, L] with a_i (L + 2 d) <= T* (at least d_min): fast devices
   train deeper, slow ones shallower, so they finish together.
4. Ranks: relative capacity c_i = min_j a_j / a_i in (0, 1]; top rank r_i = ranks[round(c_i (K - 1))]
   (K ranks, sorted); the layers in the top third of the device's LoRA depth get r_i, the middle
   third the next lower rank of the set, the bottom third the one below (never below the smallest).

Aggregation is ``svd`` per (layer, matrix) over the devices that train that layer (LEGEND's
per-layer aggregation).
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import Field

from algorithms.base import FleetView, RoundReports, Strategy
from algorithms.capacity import StepTimes
from algorithms.common import CommonParams, Rank
from algorithms.registry import register
from devices.plan import Plan, top_layers


class LegendParams(CommonParams):
    ranks: list[Rank] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    min_depth: Annotated[int, Field(ge=1)] = 1
    initial_depth: Annotated[int, Field(ge=1)] | None = None
    budget_quantile: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.9


@register
class Legend(Strategy):
    name = "legend"
    Params = LegendParams
    aggregator = "svd"

    @classmethod
    def check_params(cls, params, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        out = super().check_params(params, num_layers, learning)
        for key in ("min_depth", "initial_depth"):
            v = params.min_depth if key == "min_depth" else params.initial_depth
            if v is not None and v > num_layers:
                out.append((key, f"{v} exceeds the target model's {num_layers} layers"))
        if params.lora_depth is not None:
            out.append(("lora_depth", "legend chooses the depth per device; set min_depth / initial_depth instead"))
        return out

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.times = StepTimes(ctx.n_devices)
        self.depth = np.zeros(ctx.n_devices, dtype=np.int64)  # depth of each device's last ok report

    def layer_ranks(self, depth: int, top: int) -> tuple[int, ...]:
        """Ranks of the ``depth`` top layers, bottom first: thirds at top, next lower, the one below."""
        ranks = sorted(set(self.params.ranks))
        k = ranks.index(top)
        out = []
        for pos in range(depth):  # pos 0 = the lowest LoRA layer
            from_top = depth - 1 - pos
            step = (3 * from_top) // depth
            out.append(ranks[max(0, k - step)])
        return tuple(out)

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        p = self.params
        L = self.ctx.num_layers
        _, steps, batch = self.plan_shape()
        ranks = sorted(set(p.ranks))
        d0 = min(L, p.initial_depth or math.ceil(L / 2))
        known = np.isfinite(self.times.step_s) & (self.depth > 0)
        a = np.full(self.ctx.n_devices, np.nan)
        a[known] = self.times.step_s[known] / (L + 2 * self.depth[known])
        if known.any():
            budget = float(np.quantile(a[known] * (L + 2 * p.min_depth), p.budget_quantile))
            a_min = float(np.min(a[known]))
        out = []
        for d in selected:
            if not known[d]:
                depth, top = d0, ranks[(len(ranks) - 1) // 2]
            else:
                depth = int(np.clip(math.floor((budget / a[d] - L) / 2), p.min_depth, L))
                c = a_min / a[d]
                top = ranks[int(round(c * (len(ranks) - 1)))]
            lr = self.layer_ranks(depth, top)
            out.append(Plan(0.0, max(lr), top_layers(depth, L), steps, batch, layer_ranks=lr))
        return out

    def observe(self, round_index: int, reports: RoundReports):
        for j in self.times.observe(reports):  # the depth each recorded step time was measured at
            layers = reports.plans[j].lora_layers
            self.depth[int(reports.devices[j])] = self.ctx.num_layers if layers is None else len(layers)

    def state(self) -> dict:
        return {**super().state(), "depth": self.depth.tolist(), "step_s": self.times.step_s.tolist()}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self.depth = np.array(st["depth"], dtype=np.int64)
        self.times.step_s = np.array(st["step_s"], dtype=float)

"""``mergesfl``: split federated learning with feature merging and batch-size regulation (MergeSFL).

MergeSFL (Liao et al., arXiv 2311.13348) adds two levers to split federated learning (``splitfed``):

* **Feature merging**: every step the server concatenates the cut-layer features of the devices into
  one mixed batch and trains the top on it (a batch closer to IID data than any one device's under
  label skew), then returns each device its slice of the feature gradients. The merged step needs every
  device's features, so the devices' steps meet at a per-step barrier (``sim/split_round.py``).
* **Batch-size regulation**: heterogeneous devices get different batch sizes so that their per-step
  times line up and the barrier wastes little time.

The paper optimises both jointly (with participant selection by a genetic algorithm that brings the
merged label distribution close to IID, under bandwidth constraints). Implemented here: merging
(``merge``, a plan flag) and a prior-free regulation rule (``regulate``) [inferred, documented below];
participant selection is not implemented (the round policy selects devices as for every strategy).

Regulation rule [inferred]. The server measures each device's own share of a step, t_i (forward,
feature upload, gradient download, backward: the time between sending the device its gradients and
receiving its next features, plus the two transfers; the ``split_step_busy_s`` report column), with
batch b_i, and keeps an estimate of its throughput v_i = b_i / t_i (samples per second), smoothed
across rounds: v_i <- (1 - beta) v_i + beta b_i / t_i. A round's n selected devices share the fleet's
total batch B_tot = n x B (B the run's batch size) in proportion to throughput::

    b_i = B_tot v_i / sum_j v_j,   rounded to integers by largest remainder (sum kept at B_tot),
          then clipped to [min_batch, max_batch]

A device never measured gets the median throughput of the measured ones (the run's batch B in the
first round, when none is). If t_i is proportional to b_i the steps align at once; the latency and
kernel-launch terms make t_i affine in b_i, and the fixed point of the rule is equal t_i for all
devices, reached over rounds. A device that runs out of memory has its batch cap halved.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from algorithms.base import FleetView, RoundReports, StrategyContext
from algorithms.capacity import proportional_batches
from algorithms.registry import register
from algorithms.splitfed import SplitParams, SplitStrategy
from devices.plan import Plan


class MergeSFLParams(SplitParams):
    merge: bool = True
    regulate: bool = True
    smoothing: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    min_batch: Annotated[int, Field(ge=1)] = 1
    max_batch: Annotated[int, Field(ge=1)] | None = None


@register
class MergeSFL(SplitStrategy):
    name = "mergesfl"
    Params = MergeSFLParams

    def __init__(self, params: BaseModel, ctx: StrategyContext):
        super().__init__(params, ctx)
        self.merge_features = params.merge
        self.speed = np.full(ctx.n_devices, np.nan)  # v_i, samples per second of the device's own step time
        self.cap = np.full(ctx.n_devices, params.max_batch or np.iinfo(np.int64).max, dtype=np.int64)

    def batches(self, selected: np.ndarray) -> np.ndarray:
        """Per selected device, its batch size this round (module docstring)."""
        p: MergeSFLParams = self.params
        base = self.plan_shape()[2]
        v = self.speed[selected]
        known = np.isfinite(v)
        if not p.regulate or not known.any():
            b = np.full(len(selected), base, dtype=np.int64)
        else:
            b = proportional_batches(base * len(selected), np.where(known, v, np.median(v[known])))
        return np.clip(b, p.min_batch, self.cap[selected])

    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        """Merging flag and regulated batch sizes (module docstring)."""
        return [self.plan_for(int(b)) for b in self.batches(selected)]

    def observe(self, round_index: int, reports: RoundReports) -> None:
        """Update the throughput estimates from the devices that reported; halve the cap of OOM devices."""
        beta = self.params.smoothing
        busy = reports.extra.get("split_step_busy_s")
        batch = np.array([p.batch_size for p in reports.plans], dtype=float)
        ok = reports.status == "ok"
        if busy is not None and ok.any():
            d, obs = reports.devices[ok], batch[ok] / busy[ok]
            old = self.speed[d]
            self.speed[d] = np.where(np.isfinite(old), (1 - beta) * old + beta * obs, obs)
        oom = reports.status == "oom"
        self.cap[reports.devices[oom]] = np.maximum(self.params.min_batch, batch[oom].astype(np.int64) // 2)
        return None

    def state(self) -> dict:
        """The RNG, the throughput estimates and the batch caps."""
        return {**super().state(), "speed": self.speed.tolist(), "cap": self.cap.tolist()}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self.speed = np.array(st["speed"], dtype=float)
        self.cap = np.array(st["cap"], dtype=np.int64)

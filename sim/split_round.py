"""A split-learning round (split federated learning): per-step feature exchange with a server that computes.

A :class:`SplitRound` is a :class:`sim.round.Round` whose plans carry ``split_layers`` (the bottom
blocks on the device, :mod:`devices.split_cost`). Its phases keep the round's shape, so selection,
round policies (all, deadline, first-k), dropouts, availability windows, power-mode outages, faults
(crashes, lost uploads, departures, partitions, straggler spikes), the vectorised cohort and the
event path all apply unchanged:

    download (the bottom's adapters)  ->  training: tau split steps  ->  upload (the bottom's adapters)

and the server averages the bottom's adapters once per round (FedAvg; the top stays on the server).
One split step of device i (durations from its power mode, background load and straggler spike, and
its link at the round start)::

    f_i  device forward of the bottom        (roofline, ``ModeTable.step_times_s``)
    u_i  features up     = latency + 8 S_feat,i / 1e6 / eta / R_up,i
    T    server step     = sum_j F_srv,j / (peak x efficiency)          (j: the round's devices that fit)
    g_i  gradients down  = latency + 8 S_feat,i / 1e6 / eta / R_down,i
    b_i  device backward of the bottom

The server step T is the same for every device: with feature merging the server runs the top once on
the merged batch (sum_j b_j samples, FLOPs linear in the batch); without merging it runs one top copy
per device (SplitFed V1) and its throughput is shared by all the round's devices, whose server work is
taken to overlap at every step [inferred: processor sharing, an upper bound on a device's wait for the
server when devices drift apart].

* Without merging (``plan.merge_features`` False) a device's steps are independent:
  ``compute_i = tau_i (f_i + u_i + T + g_i + b_i)``; it waits for the others only at the round's end.
* With merging the server needs every merging device's features before it runs the top, so each
  step ends at a barrier. Device i starts step 1 when its download ends (planned: outage + download
  at the round-start rate, no contention), and for step k::

      a_i(k) = s_i(k) + f_i + u_i              features of i arrive
      S(k)   = max over merging devices still stepping of a_j(k)     the server starts the merged step
      s_i(k+1) = S(k) + T + g_i + b_i           i starts its next step
      wait_i += S(k) - a_i(k)                   per-step idle of i

  ``compute_i = s_i(tau_i + 1) - s_i(1)``. Devices that do not fit their memory (OOM) are left out of
  the merge; a device that fails mid-round (dropout, crash, departure, partition) does not change the
  others' schedule [inferred: the server drops its features without waiting].

What is modelled exactly and what is not: the round's adapter transfers follow bandwidth traces and
share channels under ``network.contention`` like any round; the per-step feature and gradient
transfers use each device's link rate at the round start and do not contend on the shared channels
(their contention would couple every step of every device; with contention on, only the two adapter
messages per round contend). The per-step schedule is fixed at the round start from planned
download ends, so a download delayed by contention shifts that device's training, not the others'.

Per device, ``device_rounds`` gains ``split_layers``, ``split_step_busy_s`` (f + u + g + b, the
device's own share of a step, what a server measures between sending a device its gradients and
receiving its next features plus the two transfers), ``split_step_wait_s`` (mean per-step idle at the
merge barrier; 0 without merging), ``split_server_step_s`` (T) and ``split_feature_bytes`` (S_feat, each
way per step: not in ``bytes_up`` / ``bytes_down``, which count the round's adapter messages).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from devices.completion import CompletionTimes, transfer_s
from devices.plan import Plan
from devices.split_cost import SplitCost, split_cost
from devices.workload import Workload
from learning.api import Learner
from sim.fleet import FleetModel
from sim.records import distinct_objects
from sim.round import Link, Round
from sim.round_policy import RoundPolicy

SPLIT_COLUMNS = ("split_layers", "split_step_busy_s", "split_step_wait_s", "split_server_step_s",
                 "split_feature_bytes")
"""``device_rounds`` columns a split run adds (module docstring)."""


@dataclass(frozen=True)
class ServerProfile:
    """The server's compute for the top of a split model: achieved FLOP/s = peak x efficiency."""

    peak_tflops: float
    efficiency: float

    @property
    def flops_per_s(self) -> float:
        return self.peak_tflops * 1e12 * self.efficiency


@dataclass(frozen=True)
class StepPhases:
    """Per-device durations (s) of one split step's phases and the shared server step."""

    forward_s: np.ndarray
    up_s: np.ndarray
    server_s: float
    down_s: np.ndarray
    backward_s: np.ndarray

    @property
    def busy_s(self) -> np.ndarray:
        """The device's own share of a step: forward, feature upload, gradient download, backward."""
        return self.forward_s + self.up_s + self.down_s + self.backward_s

    @property
    def step_s(self) -> np.ndarray:
        """One step with no wait: f + u + T + g + b, summed in the order the step runs."""
        return self.forward_s + self.up_s + self.server_s + self.down_s + self.backward_s


def independent_steps(phases: StepPhases, steps: np.ndarray) -> np.ndarray:
    """Training seconds of devices whose steps do not wait for each other: tau (f + u + T + g + b)."""
    return steps * phases.step_s


def merged_steps(phases: StepPhases, steps: np.ndarray, start_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training seconds and total barrier wait of devices whose features are merged every step
    (module docstring: a_i(k), S(k), s_i(k+1)); ``start_s`` is when each starts its first step."""
    s = start_s.astype(float).copy()
    wait = np.zeros(len(s))
    for k in range(int(steps.max()) if len(steps) else 0):
        act = steps > k
        arrive = s[act] + phases.forward_s[act] + phases.up_s[act]
        barrier = arrive.max()
        wait[act] += barrier - arrive
        s[act] = barrier + phases.server_s + phases.down_s[act] + phases.backward_s[act]
    return s - start_s, wait


class SplitRound(Round):
    """A round of split plans (module docstring); ``server`` computes the top of every step."""

    def __init__(self, env: simpy.Environment, index: int, selected: np.ndarray, plans: list[Plan],
                 fleet: FleetModel, workload: Workload, link: Link, learner: Learner, policy: RoundPolicy,
                 outage_s: float, server: ServerProfile):
        self.server, self._outage_s = server, outage_s  # read by _price, which Round.__init__ calls
        super().__init__(env, index, selected, plans, fleet, workload, link, learner, policy, outage_s)

    @staticmethod
    def price(workload: Workload, plan: Plan, precision: str) -> SplitCost:
        """The split cost of ``plan`` (:func:`devices.split_cost.split_cost`)."""
        return split_cost(workload, plan, precision)

    def _price(self, workload: Workload) -> None:
        """Every plan's split cost, the memory check, the per-step phases and the round's phase durations."""
        fleet, sel, buf = self.fleet, self.selected, self.buf
        _, obj = distinct_objects(self.plans)
        unique, at = self._plan_costs(workload, obj)

        def col(get, dtype=float) -> np.ndarray:
            return np.array([get(c) for c in unique], dtype=dtype)[at]

        self.bytes_down, self.bytes_up = col(lambda c: c.bytes_down, np.int64), col(lambda c: c.bytes_up, np.int64)
        self.flops = col(lambda c: c.flops_per_step)
        self.memory = col(lambda c: c.memory_model_bytes) + fleet.reserve_bytes[self.groups]
        self.capacity = fleet.capacity_bytes[self.groups]
        self.fits = self.memory <= self.capacity
        bw = fleet.bandwidth
        self.up_mbps = bw.up_mbps[sel]
        self.down_mbps = self.up_mbps * bw.down_up_ratio[sel]
        if fleet.faults is not None:
            buf.straggler_factor[:] = fleet.faults.step_factor[sel]
        phases = self._phases(col)
        steps = np.array([p.local_steps for p in self.plans], dtype=np.int64)
        lat, eta = self.link.latency_s, self.link.efficiency
        download_s = transfer_s(self.bytes_down.astype(float), self.down_mbps, lat, eta)
        compute_s, wait_s = independent_steps(phases, steps), np.zeros(len(sel))
        merged = self.fits & np.array([p.merge_features for p in self.plans], dtype=bool)
        if merged.any():
            outage = np.where(fleet.modes.switched[sel], self._outage_s, 0.0)
            sub = StepPhases(phases.forward_s[merged], phases.up_s[merged], phases.server_s, phases.down_s[merged],
                             phases.backward_s[merged])
            compute_s[merged], wait_s[merged] = merged_steps(sub, steps[merged], (outage + download_s)[merged])
        step_s = np.where(steps > 0, compute_s / np.maximum(steps, 1), phases.step_s)
        self.times = CompletionTimes(step_s, compute_s, download_s,
                                     transfer_s(self.bytes_up.astype(float), self.up_mbps, lat, eta))
        buf.step_time_s[:] = step_s
        self._record_split(col, phases, np.where(self.fits, wait_s / np.maximum(steps, 1), np.nan))

    def _phases(self, col) -> StepPhases:
        """Per-device step phases (module docstring) from the priced plans ``col``."""
        fleet, buf = self.fleet, self.buf
        spike = buf.straggler_factor if fleet.faults is not None else None

        def device_s(get) -> np.ndarray:
            t = fleet.mode_table.step_times_s(self.slots, col(lambda c: get(c).flops),
                                              col(lambda c: get(c).bytes_moved), col(lambda c: float(get(c).kernels)),
                                              self.load)
            return t if spike is None else t * spike

        feat = col(lambda c: c.feature_bytes)
        lat, eta = self.link.latency_s, self.link.efficiency
        server_s = float(col(lambda c: c.server_flops)[self.fits].sum()) / self.server.flops_per_s
        return StepPhases(device_s(lambda c: c.forward), transfer_s(feat, self.up_mbps, lat, eta), server_s,
                          transfer_s(feat, self.down_mbps, lat, eta), device_s(lambda c: c.backward))

    def _record_split(self, col, phases: StepPhases, wait_per_step_s: np.ndarray) -> None:
        """The split columns of the round's device rows (:data:`SPLIT_COLUMNS`)."""
        buf = self.buf
        buf.extra_column("split_layers")[:] = [p.split_layers for p in self.plans]
        buf.extra_column("split_step_busy_s")[:] = phases.busy_s
        buf.extra_column("split_step_wait_s")[:] = wait_per_step_s
        buf.extra_column("split_server_step_s")[:] = phases.server_s
        buf.extra_column("split_feature_bytes")[:] = col(lambda c: c.feature_bytes)

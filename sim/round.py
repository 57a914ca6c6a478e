"""One synchronous round as an object: its devices' SimPy processes, its records, its end.

A :class:`Round` owns everything that lives only while the round runs: the record buffer, the
count of devices still running and of reports, the event that ends the round early, the transfers
under way on shared channels, and each device's failure time. Each selected device runs as a
process: [outage after a power-mode switch] -> download (latency + bytes / bandwidth, or a fair
share of a shared channel) -> memory check (an OOM report) -> local training (the learner runs in
host time; simulated time is tau x t_step) -> upload -> report. A dropout, a crash, a departure, a
partition of its placement class or the end of its availability window ends it at that moment.
The round waits as its :class:`~sim.round_policy.RoundPolicy` says, cuts off the devices still
running, and collects the updates the learner computed.

Devices whose phase durations are known when the round starts (no failure, no contention, no
bandwidth trace, no outage, no partition risk) run a shorter process with durations from
:func:`devices.completion.completion_times`; the arithmetic is the same as the general process's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from devices.completion import completion_times
from devices.cost import PlanCost, plan_cost
from devices.plan import Plan
from devices.workload import Workload
from learning.api import Learner, Update
from sim.channel import SharedChannel
from sim.fleet import FleetModel
from sim.records import STATUS_CODE, RoundBuffer
from sim.round_policy import RoundPolicy

OK, OOM, DROPPED, CRASHED, LOST, PARTITIONED, LEFT = (STATUS_CODE[s] for s in (
    "ok", "oom", "dropped", "crashed", "lost", "partitioned", "left"))


@dataclass(frozen=True)
class Link:
    """How devices reach the server: latency, efficiency, and the shared channels (None: no contention)."""

    latency_s: float  # k_rtt x RTT per transfer
    efficiency: float  # share of the link rate a transfer achieves
    channels: list[SharedChannel] | None  # per placement class


class Round:
    """Round ``index`` of the devices ``selected`` under ``plans`` (module docstring)."""

    def __init__(self, env: simpy.Environment, index: int, selected: np.ndarray, plans: list[Plan],
                 fleet: FleetModel, workload: Workload, link: Link, learner: Learner, policy: RoundPolicy,
                 outage_s: float):
        self.env, self.fleet, self.link, self.learner, self.policy = env, fleet, link, learner, policy
        self.index, self.selected, self.plans = index, selected, plans
        self.t_start_s = env.now
        self.buf = RoundBuffer(index, self.t_start_s, selected, plans)
        self.groups = fleet.group[selected]
        self.slots = fleet.slots(selected)
        self.load = fleet.load.factor[selected]
        self._price(workload)
        self._failure_times(outage_s)
        n = len(selected)
        self._pending = n  # devices still running
        self._ok_count = 0
        self._done = env.event()  # every device done, or enough reports
        self._flows: list = [None] * n  # (channel, flow) of a transfer under way
        self.deadline_s = math.nan
        self.t_end_s = math.nan

    # ------------------------------------------------------------------ setup
    def _price(self, workload: Workload) -> None:
        """Every plan's cost, the memory check, and the phase durations at known rates."""
        fleet, sel, buf = self.fleet, self.selected, self.buf
        n = len(sel)
        flops, moved, kernels, memory = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        self.costs: list[PlanCost] = []
        for j, plan in enumerate(self.plans):
            c = plan_cost(workload, plan, fleet.profiles[self.groups[j]].precision)
            self.costs.append(c)
            flops[j], moved[j], kernels[j] = c.flops_per_step, c.bytes_moved, c.kernels
            memory[j] = c.memory_model_bytes
        memory += fleet.reserve_bytes[self.groups]
        self.flops, self.memory, self.capacity = flops, memory, fleet.capacity_bytes[self.groups]
        self.fits = memory <= self.capacity
        bw = fleet.bandwidth
        self.up_mbps = bw.up_mbps[sel]
        self.down_mbps = self.up_mbps * bw.down_up_ratio[sel]
        if fleet.faults is not None:  # straggler spikes: speed divided by the spike's factor
            buf.straggler_factor[:] = fleet.faults.step_factor[sel]
        self.times = completion_times(
            fleet.mode_table, self.slots, flops, moved, kernels, self.load,
            np.array([p.local_steps for p in self.plans]), np.array([c.bytes_down for c in self.costs], dtype=float),
            np.array([c.bytes_up for c in self.costs], dtype=float), self.down_mbps, self.up_mbps,
            self.link.latency_s, self.link.efficiency, buf.straggler_factor if fleet.faults is not None else None)
        buf.step_time_s[:] = self.times.step_s

    def _est_transfer(self, d: int, size: int, direction: str) -> float:
        """A transfer's planned duration from the round start (traces followed, no contention)."""
        return self.link.latency_s + self.fleet.bandwidth.data_time_s(d, size, self.env.now, direction,
                                                                      self.link.efficiency)

    def _failure_times(self, outage_s: float) -> None:
        """The moment each device fails, if it does, and the status it then gets: a dropout at a
        fraction of its planned round, the end of its availability window, a crash or a departure."""
        fleet, sel, n = self.fleet, self.selected, len(self.selected)
        self.outage = np.where(fleet.modes.switched[sel], outage_s, 0.0)
        self.fail_at = np.full(n, math.inf)
        self.fail_status = np.full(n, DROPPED, dtype=np.int8)
        drops, frac = fleet.dropout.drops[sel], fleet.dropout.fraction[sel]
        av = fleet.availability
        for j, d in enumerate(sel):
            if drops[j]:
                est = (self.outage[j] + self._est_transfer(d, self.costs[j].bytes_down, "down")
                       + self.plans[j].local_steps * self.times.step_s[j]
                       + self._est_transfer(d, self.costs[j].bytes_up, "up"))
                self.fail_at[j] = self.t_start_s + frac[j] * est
            if av.kind != "always":
                self.fail_at[j] = min(self.fail_at[j], av.window_end(int(d), self.t_start_s))
        self.lost = np.zeros(n, dtype=bool)
        self.risky = np.zeros(n, dtype=bool)  # a partition of its placement class may cut its transfers
        if fleet.faults is not None:
            self._fault_times()

    def _fault_times(self) -> None:
        """Crashes (at a fraction of a random phase) and departures (at a fraction of the round)."""
        faults, sel = self.fleet.faults, self.selected
        self.lost = faults.lost[sel]
        self.risky = faults.class_partitioned[self.fleet.placement[sel]]
        for j in np.flatnonzero(faults.crashes[sel] | faults.leaving[sel]):
            d = int(sel[j])
            phases = (self._est_transfer(d, self.costs[j].bytes_down, "down"),
                      self.plans[j].local_steps * self.times.step_s[j],
                      self._est_transfer(d, self.costs[j].bytes_up, "up"))
            t0 = self.t_start_s + self.outage[j]
            if faults.crashes[d]:  # at a fraction of a random phase's planned duration
                k = int(faults.crash_phase[d])
                t_c = t0 + sum(phases[:k]) + faults.crash_fraction[d] * phases[k]
                if t_c < self.fail_at[j]:
                    self.fail_at[j], self.fail_status[j] = t_c, CRASHED
            if faults.leaving[d]:  # at a uniform fraction of the planned round
                t_l = t0 + faults.leave_fraction[d] * sum(phases)
                if t_l < self.fail_at[j]:
                    self.fail_at[j], self.fail_status[j] = t_l, LEFT

    # ------------------------------------------------------------------ the round
    def run(self):
        """Start every device, wait as the policy says, cut off the devices still running, collect updates."""
        env = self.env
        procs = [env.process(self._process(j)) for j in range(len(self.selected))]
        self.deadline_s = self.policy.deadline_s()
        if math.isfinite(self.deadline_s):
            yield self._done | env.timeout(self.deadline_s)
        else:
            yield self._done
        self.t_end_s = env.now
        self._cut(procs)
        yield env.timeout(0)  # let interrupted processes unwind at t_end
        self._collect()

    def _process(self, j: int):
        """Device ``j``'s process: the short one when its phase durations are known at the start."""
        bw, d = self.fleet.bandwidth, int(self.selected[j])
        known = (not bw.traced[d] and not math.isfinite(self.fail_at[j]) and self.outage[j] == 0
                 and self.link.channels is None and not self.risky[j])
        if known:
            self.buf.bw_down_mbps[j], self.buf.bw_up_mbps[j] = self.down_mbps[j], self.up_mbps[j]
            return self._device_fast(j, d)
        return self._device(j, d)

    def _cut(self, procs: list) -> None:
        """Cut off devices still running (late at a deadline, cancelled once k reports arrived)."""
        buf, cut = self.buf, self.policy.cut_status
        for j, p in enumerate(procs):
            if not buf.done[j]:
                buf.status[j] = cut
                buf.t_end_s[j] = self.t_end_s
                buf.done[j] = True
                if self._flows[j] is not None:
                    self._flows[j][0].cancel(self._flows[j][1])
                p.interrupt("round over")

    def _finish(self, j: int, status: int) -> None:
        """Device ``j`` is done with ``status``; the round ends when all are, or at the k-th report."""
        buf = self.buf
        buf.status[j] = status
        buf.t_end_s[j] = self.env.now
        buf.done[j] = True
        self._pending -= 1
        if status == OK:
            self._ok_count += 1
        k = self.policy.reports_needed
        if not self._done.triggered and (self._pending == 0 or (k is not None and self._ok_count >= k)):
            self._done.succeed()

    # ------------------------------------------------------------------ learner
    def _downloaded(self, j: int, d: int) -> bool:
        """Record the finished download; then either an OOM report (False) or the start of local
        training, whose real update the learner starts now in host time (True)."""
        buf, now = self.buf, self.env.now
        buf.t_download_end_s[j] = now
        buf.bytes_down[j] = self.costs[j].bytes_down
        if not self.fits[j]:
            buf.t_report_s[j] = now
            return False
        buf.t_compute_start_s[j] = now
        if self.learner.trains:  # simulated time does not depend on the learner
            buf.pending[j] = self.learner.submit(d, self.plans[j], self.index)
        return True

    def _collect(self) -> None:
        """The round's submitted updates (every device whose download finished, also those cut off later)."""
        buf = self.buf
        if not buf.pending:
            return
        slots = sorted(buf.pending)
        updates = self.learner.collect([buf.pending[j] for j in slots])
        for j, upd in zip(slots, updates, strict=True):
            self._record_update(j, upd)
        buf.pending.clear()

    def _record_update(self, j: int, upd: Update) -> None:
        """Put device ``j``'s update and its loss, norm and learner columns into the buffer."""
        buf = self.buf
        buf.loss_before[j], buf.loss_after[j], buf.lora_update_norm[j] = (
            upd.loss_before, upd.loss_after, upd.lora_update_norm)
        buf.updates[j] = upd
        for k, v in upd.extra.items():
            buf.extra_column(k)[j] = v

    # ------------------------------------------------------------------ devices
    def _sleep(self, duration: float, fail_at: float):
        """Wait ``duration``; returns False (after waiting until ``fail_at``) if the device fails first."""
        env = self.env
        if env.now + duration > fail_at:
            yield env.timeout(max(0.0, fail_at - env.now))
            return False
        yield env.timeout(duration)
        return True

    def _transfer(self, j: int, d: int, size: int, direction: str):
        """Latency + payload; with contention the payload shares the device's channel. Returns None when
        the transfer completes, else the status of the failure that cut it (the device's own failure,
        or a partition of its placement class, whichever comes first)."""
        env, bw, link = self.env, self.fleet.bandwidth, self.link
        cut, why = self.fail_at[j], int(self.fail_status[j])
        faults = self.fleet.faults
        if faults is not None:
            p = faults.partition_start(int(self.fleet.placement[d]), env.now)
            if p < cut:
                cut, why = p, PARTITIONED
        rate = bw.rate_mbps(d, env.now + link.latency_s, direction)
        (self.buf.bw_up_mbps if direction == "up" else self.buf.bw_down_mbps)[j] = rate
        if link.channels is None:
            dur = link.latency_s + bw.data_time_s(d, size, env.now + link.latency_s, direction, link.efficiency)
            return None if (yield from self._sleep(dur, cut)) else why
        if not (yield from self._sleep(link.latency_s, cut)):
            return why
        ch = link.channels[self.fleet.placement[d]]
        flow = ch.start(8.0 * size / link.efficiency, rate * 1e6)
        self._flows[j] = (ch, flow)
        if math.isfinite(cut):
            yield flow.event | env.timeout(max(0.0, cut - env.now))
            if not flow.event.triggered:
                ch.cancel(flow)
                self._flows[j] = None
                return why
        else:
            yield flow.event
        self._flows[j] = None
        return None

    def _device_fast(self, j: int, d: int):
        """:meth:`_device` for a device with known phase durations (no failure, no contention, no partition)."""
        env, buf, t = self.env, self.buf, self.times
        try:
            buf.t_available_s[j] = buf.t_download_start_s[j] = env.now
            yield env.timeout(t.download_s[j])
            if not self._downloaded(j, d):
                return self._finish(j, OOM)
            yield env.timeout(t.compute_s[j])
            buf.compute_s[j] = t.compute_s[j]
            buf.t_compute_end_s[j] = buf.t_upload_start_s[j] = env.now
            yield env.timeout(t.upload_s[j])
            return self._uploaded(j)
        except simpy.Interrupt:
            return None

    def _device(self, j: int, d: int):
        """A device's round, event by event (module docstring)."""
        env, buf, fail_at = self.env, self.buf, self.fail_at[j]
        fail = int(self.fail_status[j])  # dropped (dynamics), crashed or left (faults) at fail_at
        try:
            if self.outage[j] > 0 and not (yield from self._sleep(self.outage[j], fail_at)):
                return self._finish(j, fail)
            buf.t_available_s[j] = env.now
            buf.t_download_start_s[j] = env.now
            err = yield from self._transfer(j, d, self.costs[j].bytes_down, "down")
            if err is not None:
                return self._finish(j, err)
            if not self._downloaded(j, d):
                return self._finish(j, OOM)
            compute = self.times.compute_s[j]
            if not (yield from self._sleep(compute, fail_at)):
                buf.compute_s[j] = env.now - buf.t_compute_start_s[j]
                return self._finish(j, fail)
            buf.compute_s[j] = compute
            buf.t_compute_end_s[j] = env.now
            buf.t_upload_start_s[j] = env.now
            err = yield from self._transfer(j, d, self.costs[j].bytes_up, "up")
            if err is not None:
                return self._finish(j, err)
            return self._uploaded(j)
        except simpy.Interrupt:
            return None  # the round already recorded the cut-off

    def _uploaded(self, j: int) -> None:
        """The upload ended: a report, or a lost one (sent, never received: ``faults.lost_upload_prob``)."""
        buf = self.buf
        buf.t_upload_end_s[j] = self.env.now
        buf.bytes_up[j] = self.costs[j].bytes_up
        if self.lost[j]:
            return self._finish(j, LOST)
        buf.t_report_s[j] = self.env.now
        return self._finish(j, OK)

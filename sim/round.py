"""One synchronous round as an object: its devices' SimPy processes, its records, its end.

A :class:`Round` owns everything that lives only while the round runs: the record buffer, the
count of devices still running and of reports, the event that ends the round early, the transfers
under way on shared channels, and each device's failure time. A selected device runs as a
process (unless its phase durations are known, below): [outage after a power-mode switch] -> download (latency + bytes / bandwidth, or a fair
share of a shared channel) -> memory check (an OOM report) -> local training (the learner runs in
host time; simulated time is tau x t_step) -> upload -> report. A dropout, a crash, a departure, a
partition of its placement class or the end of its availability window ends it at that moment.
The round waits as its :class:`~sim.round_policy.RoundPolicy` says, cuts off the devices still
running, and collects the updates the learner computed.

Devices whose phase durations are known when the round starts (no failure, no contention, no
bandwidth trace, no outage, no partition risk) take no process at all: a :class:`KnownCohort`
computes their phase times as arrays from :func:`devices.completion.completion_times` and adds at
most a few events to the round (the times at which their reports can end it), so a round of N such
devices costs O(N) numpy work and O(1) events instead of 4 N events on a heap of depth N; devices
that need a process run beside it in the same round. The records are bit for bit those of the event path (``Round.vectorise = False`` runs every device as a
process, the reference the tests compare against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from devices.completion import CompletionTimes, completion_times
from devices.cost import PlanCost, plan_cost
from devices.plan import Plan
from devices.workload import Workload
from learning.api import Learner, Update
from sim.channel import SharedChannel
from sim.fleet import FleetModel
from sim.records import STATUS_CODE, RoundBuffer, distinct_objects
from sim.round_policy import RoundPolicy

OK, OOM, DROPPED, CRASHED, LOST, PARTITIONED, LEFT = (STATUS_CODE[s] for s in (
    "ok", "oom", "dropped", "crashed", "lost", "partitioned", "left"))


@dataclass(frozen=True)
class Link:
    """How devices reach the server: latency, efficiency, and the shared channels (None: no contention)."""

    latency_s: float  # k_rtt x RTT per transfer
    efficiency: float  # share of the link rate a transfer achieves
    channels: list[SharedChannel] | None  # per placement class


class KnownCohort:
    """The devices of a round whose phase durations are known at its start, as arrays.

    Device j of the cohort, with download, compute and upload durations D_j, C_j, U_j, reads on the
    event path's clock (the same float additions, in the same order, as SimPy's ``now + delay``)::

        e1_j = t0 + D_j     download end (an OOM report here when the plan does not fit)
        e2_j = e1_j + C_j   compute end, upload start
        e3_j = e2_j + U_j   upload end: a report (ok), or a lost one

    and finishes at ``f_j`` = e1_j (OOM) or e3_j. When the round ends at T, the device has done
    exactly the phases whose end is <= T: SimPy orders its queue by (time, priority, insertion), and
    the event that resumes the waiting round is inserted at T, after every event at T that was
    inserted at an earlier time, which is every phase end here since each phase lasts > 0 (a device
    whose phase would not advance the clock, e.g. tau = 0, is left to the event path).
    """

    def __init__(self, slots: np.ndarray, t0_s: float, times: CompletionTimes, fits: np.ndarray,
                 lost: np.ndarray):
        self.slots = slots
        self.t0_s = t0_s
        self.compute_s = times.compute_s[slots]
        self.e1 = t0_s + times.download_s[slots]
        self.e2 = self.e1 + self.compute_s
        self.e3 = self.e2 + times.upload_s[slots]
        self.fits = fits[slots]
        self.finish_s = np.where(self.fits, self.e3, self.e1)
        self.status = np.where(self.fits, np.where(lost[slots], LOST, OK), OOM).astype(np.int8)
        self._finish_sorted = np.sort(self.finish_s)
        self.ok_sorted_s = np.sort(self.finish_s[self.status == OK])  # report times, ascending

    @staticmethod
    def advances(t0_s: float, times: CompletionTimes, fits: np.ndarray) -> np.ndarray:
        """Per device: does every phase it would run move the clock forward (see the class docstring)?"""
        e1 = t0_s + times.download_s
        e2 = e1 + times.compute_s
        return (e1 > t0_s) & (~fits | ((e2 > e1) & (e2 + times.upload_s > e2)))

    @property
    def n(self) -> int:
        return len(self.slots)

    @property
    def last_finish_s(self) -> float:
        """When the last cohort device finishes (-inf for an empty cohort)."""
        return float(self._finish_sorted[-1]) if self.n else -math.inf

    def counts(self, now_s: float) -> tuple[int, int]:
        """Cohort devices finished, and of those reported ok, at or before ``now_s``."""
        return (int(np.searchsorted(self._finish_sorted, now_s, side="right")),
                int(np.searchsorted(self.ok_sorted_s, now_s, side="right")))

    def record(self, buf: RoundBuffer, t_end_s: float, cut_status: int, bytes_down: np.ndarray,
               bytes_up: np.ndarray) -> np.ndarray:
        """Write the cohort's rows of ``buf`` for a round that ended at ``t_end_s`` (devices not
        finished by then get ``cut_status``); returns the slots whose local training started, in the
        event path's order of their download ends (time, then slot)."""
        j, T, nan = self.slots, t_end_s, math.nan
        reached1 = self.e1 <= T
        reached2 = self.fits & (self.e2 <= T)
        reached3 = self.fits & (self.e3 <= T)
        done = self.finish_s <= T
        buf.t_available_s[j] = buf.t_download_start_s[j] = self.t0_s
        buf.t_download_end_s[j] = np.where(reached1, self.e1, nan)
        buf.bytes_down[j] = np.where(reached1, bytes_down[j], 0)
        trained = reached1 & self.fits
        buf.t_compute_start_s[j] = np.where(trained, self.e1, nan)
        buf.compute_s[j] = np.where(reached2, self.compute_s, nan)
        buf.t_compute_end_s[j] = buf.t_upload_start_s[j] = np.where(reached2, self.e2, nan)
        buf.t_upload_end_s[j] = np.where(reached3, self.e3, nan)
        buf.bytes_up[j] = np.where(reached3, bytes_up[j], 0)
        buf.t_report_s[j] = np.where(done & (self.status != LOST), self.finish_s, nan)
        buf.status[j] = np.where(done, self.status, cut_status)
        buf.t_end_s[j] = np.where(done, self.finish_s, T)
        buf.done[j] = True
        started = np.flatnonzero(trained)
        return j[started[np.lexsort((j[started], self.e1[started]))]]


def _exact_delay(now: float, t_s: float) -> float | None:
    """The float delay d with ``now + d == t_s`` (``t_s - now`` is not always it: the nearest one is found
    by stepping d one ulp at a time), or None when no float d lands there (possible only when
    now < t_s / 2: otherwise ``t_s - now`` is exact by Sterbenz's lemma and so is the sum)."""
    d = t_s - now
    for _ in range(64):
        if now + d < t_s:
            d = np.nextafter(d, math.inf)
        elif now + d > t_s:
            d = np.nextafter(d, -math.inf)
        else:
            return d
    return None


def call_at(env: simpy.Environment, t_s: float, fn) -> None:
    """Call ``fn()`` at exactly the simulated time ``t_s`` (> now). When no single float delay reaches
    ``t_s`` from now, hop first to about 3/4 of ``t_s``, from where the delay ``t_s - now`` is exact."""
    d = _exact_delay(env.now, t_s)
    if d is not None:
        env.timeout(d).callbacks.append(lambda _event: fn())
        return
    env.timeout(0.75 * t_s - env.now).callbacks.append(lambda _event: call_at(env, t_s, fn))


class Round:
    """Round ``index`` of the devices ``selected`` under ``plans`` (module docstring)."""

    vectorise = True  # False: every device runs as its own process (the event path, the tests' reference)

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
        self._pending = n  # devices still running as processes
        self._ok_count = 0  # their ok reports
        self._done = env.event()  # every device done, or enough reports
        self.cohort = KnownCohort(np.zeros(0, dtype=np.int64), self.t_start_s, self.times, self.fits, self.lost)
        self._next_kth_s = math.inf  # when a scheduled check may find the k-th report among the cohort's
        self._flows: list = [None] * n  # (channel, flow) of a transfer under way
        self.deadline_s = math.nan
        self.t_end_s = math.nan

    # ------------------------------------------------------------------ setup
    def _price(self, workload: Workload) -> None:
        """Every plan's cost, the memory check, and the phase durations at known rates."""
        fleet, sel, buf = self.fleet, self.selected, self.buf
        first, obj = distinct_objects(self.plans)  # strategies hand one plan object to many devices
        unique, at = self._plan_costs(workload, obj)
        flops, moved, kernels, memory = (np.array([getattr(c, f) for c in unique], dtype=float)[at] for f in (
            "flops_per_step", "bytes_moved", "kernels", "memory_model_bytes"))
        self.bytes_down, self.bytes_up = (np.array([getattr(c, f) for c in unique], dtype=np.int64)[at]
                                          for f in ("bytes_down", "bytes_up"))
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
            np.array([self.plans[i].local_steps for i in first.tolist()], dtype=np.int64)[obj],
            self.bytes_down.astype(float),
            self.bytes_up.astype(float), self.down_mbps, self.up_mbps,
            self.link.latency_s, self.link.efficiency, buf.straggler_factor if fleet.faults is not None else None)
        buf.step_time_s[:] = self.times.step_s

    def _plan_costs(self, workload: Workload, obj: np.ndarray) -> tuple[list[PlanCost], np.ndarray]:
        """The distinct :func:`devices.cost.plan_cost` values of the round's plans (a pure function of
        plan and precision, so computed once per distinct pair: plan objects, ``obj`` per device, are
        paired with the device's group; equal plans are found by value), and per device the index of
        its own."""
        precision = [p.precision for p in self.fleet.profiles]  # per group
        pairs, at_pair, pair_of = np.unique(obj * len(precision) + self.groups, return_index=True,
                                            return_inverse=True)  # (plan object, group) pairs
        by_value: dict[tuple, int] = {}
        unique: list[PlanCost] = []
        value_of_pair = np.empty(len(pairs), dtype=np.int64)
        for i, j in enumerate(at_pair.tolist()):
            plan, prec = self.plans[j], precision[self.groups[j]]
            try:
                u = by_value.setdefault((plan, prec), len(unique))
            except TypeError:  # a plan with an unhashable field (a list): priced on its own
                u = len(unique)
            if u == len(unique):
                unique.append(self.price(workload, plan, prec))
            value_of_pair[i] = u
        return unique, value_of_pair[pair_of.reshape(-1)]

    @staticmethod
    def price(workload: Workload, plan: Plan, precision: str) -> PlanCost:
        """The cost of one plan at one compute precision (:func:`devices.cost.plan_cost`; the split
        round, ``sim/split_round.py``, prices split plans instead)."""
        return plan_cost(workload, plan, precision)

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
        for j in np.flatnonzero(drops):
            d = sel[j]
            est = (self.outage[j] + self._est_transfer(d, int(self.bytes_down[j]), "down")
                   + self.plans[j].local_steps * self.times.step_s[j]
                   + self._est_transfer(d, int(self.bytes_up[j]), "up"))
            self.fail_at[j] = self.t_start_s + frac[j] * est
        if av.kind != "always":
            for j, d in enumerate(sel):
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
            phases = (self._est_transfer(d, int(self.bytes_down[j]), "down"),
                      self.plans[j].local_steps * self.times.step_s[j],
                      self._est_transfer(d, int(self.bytes_up[j]), "up"))
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
        procs = [(j, env.process(self._process(j))) for j in self._split()]
        self._pending = len(procs)
        self._watch_cohort()
        self.deadline_s = self.policy.deadline_s()
        if math.isfinite(self.deadline_s):
            yield self._done | env.timeout(self.deadline_s)
        else:
            yield self._done
        self.t_end_s = env.now
        self._cut(procs)
        started = self.cohort.record(self.buf, self.t_end_s, self.policy.cut_status, self.bytes_down, self.bytes_up)
        if self.learner.trains:
            for j in started.tolist():
                self._submit(j, int(self.selected[j]))
        yield env.timeout(0)  # let interrupted processes unwind at t_end
        self._collect()

    def _known(self) -> np.ndarray:
        """Per device: are its phase durations known at the round start (no bandwidth trace, failure,
        outage, contention or partition risk)?"""
        traced = self.fleet.bandwidth.traced[self.selected]
        known = ~traced & ~np.isfinite(self.fail_at) & (self.outage == 0) & ~self.risky
        return known if self.link.channels is None else np.zeros_like(known)

    def _split(self) -> list[int]:
        """Put the devices with known phase durations into the round's :class:`KnownCohort` (when
        ``vectorise``); the slots of the others, which run as processes."""
        self.known = self._known()
        if not self.vectorise:
            return list(range(len(self.selected)))
        vector = self.known & KnownCohort.advances(self.t_start_s, self.times, self.fits)
        slots = np.flatnonzero(vector)
        self.cohort = KnownCohort(slots, self.t_start_s, self.times, self.fits, self.lost)
        self.buf.bw_down_mbps[slots], self.buf.bw_up_mbps[slots] = self.down_mbps[slots], self.up_mbps[slots]
        return np.flatnonzero(~vector).tolist()

    def _watch_cohort(self) -> None:
        """Check the round's end when the cohort's last device finishes and (first-k) at its k-th report."""
        if self.cohort.n:
            self._check_at(self.cohort.last_finish_s)
        self._watch_kth()

    def _watch_kth(self) -> None:
        """First-k: check the round's end when the cohort's reports would complete the k still missing
        (sooner each time a process reports)."""
        k = self.policy.reports_needed
        if k is None:
            return
        missing = k - self._ok_count
        ok_s = self.cohort.ok_sorted_s
        if 1 <= missing <= len(ok_s) and ok_s[missing - 1] < self._next_kth_s:
            self._next_kth_s = float(ok_s[missing - 1])
            self._check_at(self._next_kth_s)

    def _check_at(self, t_s: float) -> None:
        """Check whether the round is over at ``t_s`` (> now)."""
        call_at(self.env, t_s, self._check_done)

    def _process(self, j: int):
        """Device ``j``'s process: the short one when its phase durations are known at the start."""
        d = int(self.selected[j])
        if self.known[j]:
            self.buf.bw_down_mbps[j], self.buf.bw_up_mbps[j] = self.down_mbps[j], self.up_mbps[j]
            return self._device_fast(j, d)
        return self._device(j, d)

    def _cut(self, procs: list) -> None:
        """Cut off devices still running (late at a deadline, cancelled once k reports arrived)."""
        buf, cut = self.buf, self.policy.cut_status
        for j, p in procs:
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
        self._check_done()
        if status == OK and not self._done.triggered:
            self._watch_kth()

    def _check_done(self) -> None:
        """End the round when every device is done, or (first-k) once k reported; cohort devices count
        from their finish time on."""
        if self._done.triggered:
            return
        cohort_done, cohort_ok = self.cohort.counts(self.env.now)
        k = self.policy.reports_needed
        if self._pending + self.cohort.n - cohort_done == 0 or (k is not None and self._ok_count + cohort_ok >= k):
            self._done.succeed()

    # ------------------------------------------------------------------ learner
    def _downloaded(self, j: int, d: int) -> bool:
        """Record the finished download; then either an OOM report (False) or the start of local
        training, whose real update the learner starts now in host time (True)."""
        buf, now = self.buf, self.env.now
        buf.t_download_end_s[j] = now
        buf.bytes_down[j] = self.bytes_down[j]
        if not self.fits[j]:
            buf.t_report_s[j] = now
            return False
        buf.t_compute_start_s[j] = now
        self._submit(j, d)
        return True

    def _submit(self, j: int, d: int) -> None:
        """Hand device ``j``'s local update to the learner (host time; simulated time does not depend on it)."""
        if self.learner.trains:
            self.buf.pending[j] = self.learner.submit(d, self.plans[j], self.index)

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
            err = yield from self._transfer(j, d, int(self.bytes_down[j]), "down")
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
            err = yield from self._transfer(j, d, int(self.bytes_up[j]), "up")
            if err is not None:
                return self._finish(j, err)
            return self._uploaded(j)
        except simpy.Interrupt:
            return None  # the round already recorded the cut-off

    def _uploaded(self, j: int) -> None:
        """The upload ended: a report, or a lost one (sent, never received: ``faults.lost_upload_prob``)."""
        buf = self.buf
        buf.t_upload_end_s[j] = self.env.now
        buf.bytes_up[j] = self.bytes_up[j]
        if self.lost[j]:
            return self._finish(j, LOST)
        buf.t_report_s[j] = self.env.now
        return self._finish(j, OK)

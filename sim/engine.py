"""The discrete-event core: a SimPy server process and one process per device per round.

Round r (DESIGN.md, "data flow of one synchronous round"):

1. The server advances the dynamics (power modes, background load, bandwidth, dropout draws) for
   every device, waits until at least one device is available, selects devices among the available
   ones (round policy, participation), and asks the strategy for their plans.
2. Each selected device runs as a process: [outage after a mode switch] -> download (latency +
   bytes / bandwidth, or a fair share of a shared channel) -> memory check (OOM report) -> local
   training (the learner runs in host time; simulated time is tau x t_step from ``devices``) ->
   upload -> report. A dropout or the end of its availability window ends it at that moment.
3. The server waits as the round policy says (``all``, ``deadline``, ``first_k``), cuts off the
   devices still running, collects the updates a learner with ``submit`` computed elsewhere
   (``sim.learner``), records every phase, lets the learner aggregate, and feeds the reports
   to the strategy.
4. It stops at the round limit, the simulated-time budget, or the target accuracy.

Simulated time is ``env.now`` in seconds and advances only by durations from ``devices``.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from algorithms.base import FleetView, RoundReports, StrategyContext
from algorithms.registry import make_strategy
from devices.cost import plan_cost
from devices.plan import Plan
from devices.rng import generator
from sim.channel import SharedChannel
from sim.fleet import FleetModel, build_fleet, build_workload
from sim.learner import Learner, NullLearner
from sim.records import STATUS_CODE, Recorder, RoundBuffer
from sim.scenario import Scenario

log = logging.getLogger(__name__)

OK, OOM, DROPPED, LATE, CANCELLED, CRASHED, LOST, PARTITIONED, LEFT = (STATUS_CODE[s] for s in (
    "ok", "oom", "dropped", "late", "cancelled", "crashed", "lost", "partitioned", "left"))


class FleetOracle:
    """What a non-prior-free strategy (the oracle) may read: the fleet's device profiles and a
    predictor of each device's round time under a plan (:meth:`Simulation.predict_round_s`)."""

    def __init__(self, sim: "Simulation"):
        self._sim = sim
        self.profiles = sim.fleet.profiles
        self.device_types = [sim.fleet.group_types[g] for g in sim.fleet.group]

    def _known_transfer_s(self, size_bytes, rate_mbps):
        """Latency + payload at a known rate (no contention, no trace): the fast path's transfer time."""
        return self.latency_s + 8.0 * size_bytes / 1e6 / self.eta_net / rate_mbps

    def predict_round_s(self, devices: np.ndarray, plan: Plan) -> np.ndarray:
        return self._sim.predict_round_s(devices, plan)


class StrategyError(RuntimeError):
    """A strategy broke the contract (e.g. lowered a device's sparsity)."""


@dataclass
class RunOutput:
    rounds: object  # pandas DataFrame
    device_rounds: object
    stop_reason: str
    sim_time_s: float
    host_time_s: float


class Simulation:
    """One run of one scenario. ``run()`` returns the records; it never touches the disk."""

    def __init__(self, sc: Scenario, base_dir: Path | None = None, learner: Learner | None = None,
                 on_round: Callable[[dict], None] | None = None,
                 checkpoint: Callable[["Simulation", int], None] | None = None):
        """``checkpoint(sim, next_round)``, when given, is called at every round boundary (after round
        ``next_round - 1``, unless it was the last or the run stops); see ``sim.checkpoint``."""
        self.sc = sc
        self.checkpoint = checkpoint
        self.start_round = 0  # > 0 after sim.checkpoint.restore
        self.workload = build_workload(sc, base_dir)
        self.fleet: FleetModel = build_fleet(sc, base_dir)
        self.learner: Learner = learner or NullLearner()
        self.on_round = on_round
        ctx = StrategyContext(
            n_devices=self.fleet.n, rounds=sc.training.rounds, local_steps=sc.training.local_steps,
            batch_size=sc.workload.batch_size, num_layers=self.workload.arch.num_layers,
            rng=generator(sc.seed, f"strategy.{sc.algorithm.name}"), learning=bool(getattr(self.learner, "trains", False)),
        )
        self.strategy = make_strategy(sc.algorithm.name, sc.algorithm.params, ctx)
        if not self.strategy.prior_free:
            ctx.oracle = FleetOracle(self)
        if hasattr(self.learner, "use_resize"):
            self.learner.use_resize(self.strategy.resize)
        self.env = simpy.Environment()
        self.recorder = Recorder(self.fleet.ids, self.fleet.group_labels, self.fleet.group_types,
                                 self.fleet.placement_names, self.fleet.slot_names)
        self.recorder.extra_names = tuple(getattr(self.learner, "extra_columns", ()))
        self.select_rng = generator(sc.seed, "server.selection")
        net = sc.network
        self.latency_s = net.k_rtt * net.rtt_ms / 1000.0
        self.eta_net = net.efficiency
        self.channels: list[SharedChannel] | None = None
        if net.contention == "shared":
            ch = SharedChannel(self.env)
            self.channels = [ch] * len(self.fleet.placement_names)
        elif net.contention == "per_class":
            self.channels = [SharedChannel(self.env) for _ in self.fleet.placement_names]
        self.stop_reason = "rounds"
        self.last_eval: dict[str, float] = {}
        self._last_median: float = math.nan

    # ------------------------------------------------------------------ server
    def run(self) -> RunOutput:
        t0 = time.perf_counter()
        server = self.env.process(self._server())
        # The event loop allocates millions of short-lived events; the cyclic GC's default gen-0
        # threshold (700) makes it rescan the fleet's long-lived state thousands of times (~25% of
        # host time at 10,000 devices). Raise it for the loop, restore after. Results are unaffected.
        old = gc.get_threshold()
        gc.set_threshold(200_000, old[1], old[2])
        try:
            # until the server ends: superseded channel timers left in the queue are not simulated time
            self.env.run(until=server)
        finally:
            gc.set_threshold(*old)
        return RunOutput(self.recorder.rounds_frame(), self.recorder.device_rounds_frame(), self.stop_reason,
                         float(self.env.now), time.perf_counter() - t0)

    def _server(self):
        sc, fleet, env = self.sc, self.fleet, self.env
        for r in range(self.start_round, sc.training.rounds):
            if sc.training.time_budget_s is not None and env.now >= sc.training.time_budget_s:
                self.stop_reason = "time_budget"
                return
            fleet.begin_round(r)
            alive = fleet.faults.alive() if fleet.faults is not None else np.ones(fleet.n, dtype=bool)
            if not alive.any():
                self.stop_reason = "fleet_empty"  # every device left (faults.leave_prob)
                return
            avail = fleet.availability.available_mask(env.now) & alive
            if not avail.any():
                t_next = self._next_availability(env.now, alive)
                if not math.isfinite(t_next):
                    self.stop_reason = "no_device_available"
                    return
                yield env.timeout(t_next - env.now)
                avail = fleet.availability.available_mask(env.now) & alive
            selected = self._select(np.flatnonzero(avail))
            yield from self._round(r, selected)
            if sc.training.target_accuracy is not None and self.last_eval.get("accuracy", -1.0) >= sc.training.target_accuracy:
                self.stop_reason = "target_accuracy"
                return
            if self.checkpoint is not None and r + 1 < sc.training.rounds:
                self.checkpoint(self, r + 1)

    def _next_availability(self, t: float, alive: np.ndarray) -> float:
        """The next moment a device that has not left the fleet comes on."""
        av = self.fleet.availability
        if av.kind == "periodic":
            k = np.ceil((t - av.phase[alive]) / av.period)
            return float(np.min(k * av.period + av.phase[alive]))
        if av.kind == "trace":
            starts = [iv[iv[:, 0] > t, 0] for iv, a in zip(av.intervals, alive) if a]
            cand = [s.min() for s in starts if len(s)]
            return float(min(cand)) if cand else math.inf
        return t

    def _select(self, candidates: np.ndarray) -> np.ndarray:
        rs = self.sc.round
        if rs.policy == "first_k":
            n = min(len(candidates), math.ceil(rs.k * rs.over_selection))
        else:
            n = max(1, math.ceil(rs.participation * len(candidates)))
        if n >= len(candidates):
            return candidates
        return np.sort(self.select_rng.choice(candidates, size=n, replace=False))

    def _round(self, r: int, selected: np.ndarray):
        sc, fleet, env = self.sc, self.fleet, self.env
        t_start = env.now
        view = FleetView(round=r, device_ids=fleet.ids, prune_ratio=fleet.prune_ratio, last=self._last_reports)
        plans = self.strategy.plan(r, view, selected)
        if len(plans) != len(selected):
            raise StrategyError(f"strategy returned {len(plans)} plans for {len(selected)} devices")
        buf = RoundBuffer(r, t_start, selected, plans)
        groups = fleet.group[selected]
        slots = fleet.slots(selected)
        load = fleet.load.factor[selected]
        n = len(selected)
        flops = np.empty(n)
        moved = np.empty(n)
        kernels = np.empty(n)
        memory = np.empty(n)
        costs = []
        for j, (d, plan) in enumerate(zip(selected, plans)):
            if plan.prune_ratio < fleet.prune_ratio[d] - 1e-12:
                raise StrategyError(f"round {r}: plan lowers {fleet.ids[d]}'s sparsity "
                                    f"{fleet.prune_ratio[d]} -> {plan.prune_ratio}")
            if plan.lora_layers is not None and max(plan.lora_layers) >= self.workload.arch.num_layers:
                raise StrategyError(f"round {r}: plan for {fleet.ids[d]} names LoRA layers beyond the model")
            c = plan_cost(self.workload, plan, fleet.profiles[groups[j]].precision)
            costs.append(c)
            flops[j], moved[j], kernels[j] = c.flops_per_step, c.bytes_moved, c.kernels
            memory[j] = c.memory_model_bytes
        memory += fleet.reserve_bytes[groups]
        capacity = fleet.capacity_bytes[groups]
        step_s = fleet.mode_table.step_times_s(slots, flops, moved, kernels, load)
        faults = fleet.faults
        if faults is not None:  # straggler spikes: speed divided by the spike's factor
            buf.straggler_factor[:] = faults.step_factor[selected]
            step_s = step_s * buf.straggler_factor
        buf.step_time_s[:] = step_s

        # dropout / availability: the moment each device fails, if it does
        outage = np.where(fleet.modes.switched[selected], sc.dynamics.power_mode.switch_outage_s, 0.0)
        fail_at = np.full(n, math.inf)
        fail_status = np.full(n, DROPPED, dtype=np.int8)  # the status a device gets when it fails at fail_at
        drops = fleet.dropout.drops[selected]
        frac = fleet.dropout.fraction[selected]
        av = fleet.availability
        for j, d in enumerate(selected):
            if drops[j]:
                est = (outage[j] + self._est_transfer(d, costs[j].bytes_down, "down")
                       + plans[j].local_steps * step_s[j] + self._est_transfer(d, costs[j].bytes_up, "up"))
                fail_at[j] = t_start + frac[j] * est
            if av.kind != "always":
                fail_at[j] = min(fail_at[j], av.window_end(int(d), t_start))
        lost = np.zeros(n, dtype=bool)
        risky = np.zeros(n, dtype=bool)  # a partition of its placement class may cut its transfers
        if faults is not None:
            lost = faults.lost[selected]
            risky = faults.class_partitioned[fleet.placement[selected]]
            for j in np.flatnonzero(faults.crashes[selected] | faults.leaving[selected]):
                d = int(selected[j])
                phases = (self._est_transfer(d, costs[j].bytes_down, "down"), plans[j].local_steps * step_s[j],
                          self._est_transfer(d, costs[j].bytes_up, "up"))
                t0 = t_start + outage[j]
                if faults.crashes[d]:  # at a fraction of a random phase's planned duration
                    k = int(faults.crash_phase[d])
                    t_c = t0 + sum(phases[:k]) + faults.crash_fraction[d] * phases[k]
                    if t_c < fail_at[j]:
                        fail_at[j], fail_status[j] = t_c, CRASHED
                if faults.leaving[d]:  # at a uniform fraction of the planned round
                    t_l = t0 + faults.leave_fraction[d] * sum(phases)
                    if t_l < fail_at[j]:
                        fail_at[j], fail_status[j] = t_l, LEFT
        self._fail_status = fail_status

        # policy bookkeeping
        rs = sc.round
        self._pending = n
        self._ok_count = 0
        self._k = rs.k if rs.policy == "first_k" else None
        self._done = env.event()
        self._flows: list = [None] * n
        fits = memory <= capacity
        # Fast path (same arithmetic as the general one): without contention, traces, outages or a
        # failure, every phase's duration is known at the start, so it is computed for all devices at once.
        bw = fleet.bandwidth
        fast = ~bw.traced[selected] & ~np.isfinite(fail_at) & (outage == 0) & (self.channels is None) & ~risky
        up_rate = bw.up_mbps[selected]
        down_rate = up_rate * bw.down_up_ratio[selected]
        size_dn = np.array([c.bytes_down for c in costs], dtype=float)
        size_up = np.array([c.bytes_up for c in costs], dtype=float)
        t_dn = self._known_transfer_s(size_dn, down_rate)
        t_up = self._known_transfer_s(size_up, up_rate)
        procs = []
        for j, d in enumerate(selected):
            if fast[j]:
                buf.bw_down_mbps[j], buf.bw_up_mbps[j] = down_rate[j], up_rate[j]
                gen = self._device_fast(buf, j, int(d), plans[j], costs[j], step_s[j], fits[j], t_dn[j], t_up[j],
                                        bool(lost[j]))
            else:
                gen = self._device(buf, j, int(d), plans[j], costs[j], step_s[j], fits[j], outage[j], fail_at[j],
                                   bool(lost[j]))
            procs.append(env.process(gen))
        deadline = math.nan
        if rs.policy == "deadline":
            deadline = rs.deadline_s if rs.deadline_s is not None else rs.deadline_factor * self._last_median
        if math.isfinite(deadline):
            yield self._done | env.timeout(deadline)
        else:
            yield self._done
        t_end = env.now
        # cut off devices still running (late at a deadline, cancelled once k reports arrived)
        cut = LATE if rs.policy == "deadline" else CANCELLED
        for j, p in enumerate(procs):
            if not buf.done[j]:
                buf.status[j] = cut
                buf.t_end_s[j] = t_end
                buf.done[j] = True
                if self._flows[j] is not None:
                    self._flows[j][0].cancel(self._flows[j][1])
                p.interrupt("round over")
        yield env.timeout(0)  # let interrupted processes unwind at t_end
        self._collect(buf)

        ok = buf.status == OK
        self._last_median = self._censored_median(buf, t_start, deadline)
        ok_idx = np.flatnonzero(ok)
        fleet.prune_ratio[selected[ok_idx]] = [plans[j].prune_ratio for j in ok_idx]
        extra = {}
        if getattr(self.learner, "trains", False):
            ok_dev = selected[ok_idx]
            self.learner.aggregate([int(d) for d in ok_dev], [buf.updates.get(j) for j in ok_idx],
                                   self.strategy.aggregator, self._agg_weights(ok_dev, [plans[j] for j in ok_idx]))
            last = r + 1 == sc.training.rounds
            if (r + 1) % sc.training.eval_every == 0 or last:
                self.last_eval = self.learner.evaluate(r)
                extra = {k: self.last_eval.get(k, math.nan) for k in ("accuracy", "accuracy_min", "accuracy_max")}
                extra["test_loss"] = self.last_eval.get("loss", math.nan)
                log.info("round %d: accuracy %.4f (min %.4f, max %.4f), test loss %.4f, mean prune ratio %.3f", r,
                         extra["accuracy"], extra["accuracy_min"], extra["accuracy_max"], extra["test_loss"],
                         float(np.mean([p.prune_ratio for p in plans])))
        reports = RoundReports(
            round=r, devices=selected, plans=plans, status=buf.status_names(), t_start_s=t_start,
            t_report_s=buf.t_report_s, compute_s=buf.compute_s, bytes_up=buf.bytes_up, bytes_down=buf.bytes_down,
            loss_before=buf.loss_before, loss_after=buf.loss_after, lora_update_norm=buf.lora_update_norm, t_end_s=t_end,
            extra=buf.extra)
        cols = self.strategy.observe(r, reports)
        row = self.recorder.add_round(buf, group=groups, slots=slots, placement=fleet.placement[selected], load=load,
                                      flops=flops, memory=memory, capacity=capacity, t_end_s=t_end,
                                      deadline_s=deadline, extra=extra, strategy_cols=cols)
        self._last_reports = reports
        if self.on_round is not None:
            self.on_round(row)

    _last_reports: RoundReports | None = None

    def _known_transfer_s(self, size_bytes, rate_mbps):
        """Latency + payload at a known rate (no contention, no trace): the fast path's transfer time."""
        return self.latency_s + 8.0 * size_bytes / 1e6 / self.eta_net / rate_mbps

    def predict_round_s(self, devices: np.ndarray, plan: Plan) -> np.ndarray:
        """Expected round time of ``plan`` on ``devices`` from the fleet's *current* state (power mode,
        background load, bandwidth): download + tau x step time + upload, no outage or contention;
        +inf where the plan does not fit the device's memory. Only for strategies that are not
        prior-free (the oracle); a real server cannot compute this."""
        fleet = self.fleet
        devices = np.asarray(devices)
        groups = fleet.group[devices]
        out = np.empty(len(devices))
        for g in np.unique(groups):
            sel = groups == g
            d = devices[sel]
            c = plan_cost(self.workload, plan, fleet.profiles[g].precision)
            step = fleet.mode_table.step_times_s(fleet.slots(d), np.full(len(d), c.flops_per_step),
                                                 np.full(len(d), c.bytes_moved), np.full(len(d), float(c.kernels)),
                                                 fleet.load.factor[d])
            up = fleet.bandwidth.up_mbps[d]
            down = up * fleet.bandwidth.down_up_ratio[d]
            t = (self._known_transfer_s(c.bytes_down, down) + plan.local_steps * step
                 + self._known_transfer_s(c.bytes_up, up))
            fits = c.memory_model_bytes + fleet.reserve_bytes[g] <= fleet.capacity_bytes[g]
            out[sel] = t if fits else np.inf
        return out

    def _agg_weights(self, devices: np.ndarray, plans: list[Plan]) -> list[float]:
        """Aggregation weights as the strategy asks: local data size |D_i| (default), samples seen
        this round (batch x steps), or uniform."""
        how = self.strategy.weighting
        if how == "data_size":
            sizes = self.learner.data_sizes()
            return [float(sizes[d]) for d in devices]
        if how == "samples":
            return [float(p.batch_size * p.local_steps) for p in plans]
        return [1.0] * len(plans)

    @staticmethod
    def _censored_median(buf: RoundBuffer, t_start: float, deadline: float) -> float:
        """Median device time of a round for ``deadline_factor``: reporting devices count with their
        time, late ones as +inf (censored at the deadline; failures are left out). If half or more
        were late the median is unknown, and the next deadline is the last one x factor instead
        (the caller multiplies), so a deadline can never collapse below what most devices need."""
        st = buf.status
        times = np.concatenate([buf.t_report_s[(st == OK) | (st == OOM)] - t_start,
                                np.full(int((st == LATE).sum()), np.inf)])
        if len(times) == 0:
            return deadline if math.isfinite(deadline) else math.nan
        med = float(np.median(times))
        return med if math.isfinite(med) else deadline

    def _est_transfer(self, d: int, size: int, direction: str) -> float:
        return self.latency_s + self.fleet.bandwidth.data_time_s(d, size, self.env.now, direction, self.eta_net)

    # ------------------------------------------------------------------ device
    def _finish(self, buf: RoundBuffer, j: int, status: int) -> None:
        now = self.env.now
        buf.status[j] = status
        buf.t_end_s[j] = now
        buf.done[j] = True
        self._pending -= 1
        if status == OK:
            self._ok_count += 1
        if not self._done.triggered and (self._pending == 0 or (self._k is not None and self._ok_count >= self._k)):
            self._done.succeed()

    def _sleep(self, duration: float, fail_at: float):
        """Wait ``duration``; returns False (after waiting until ``fail_at``) if the device fails first."""
        env = self.env
        if env.now + duration > fail_at:
            yield env.timeout(max(0.0, fail_at - env.now))
            return False
        yield env.timeout(duration)
        return True

    def _transfer(self, buf: RoundBuffer, j: int, d: int, size: int, direction: str, fail_at: float):
        """Latency + payload; with contention the payload shares the device's channel. Returns None when
        the transfer completes, else the status of the failure that cut it (the device's own failure at
        ``fail_at``, or a partition of its placement class, whichever comes first)."""
        env, bw = self.env, self.fleet.bandwidth
        cut, why = fail_at, int(self._fail_status[j])
        faults = self.fleet.faults
        if faults is not None:
            p = faults.partition_start(int(self.fleet.placement[d]), env.now)
            if p < cut:
                cut, why = p, PARTITIONED
        rate = bw.rate_mbps(d, env.now + self.latency_s, direction)
        (buf.bw_up_mbps if direction == "up" else buf.bw_down_mbps)[j] = rate
        if self.channels is None:
            dur = self.latency_s + bw.data_time_s(d, size, env.now + self.latency_s, direction, self.eta_net)
            return None if (yield from self._sleep(dur, cut)) else why
        if not (yield from self._sleep(self.latency_s, cut)):
            return why
        ch = self.channels[self.fleet.placement[d]]
        flow = ch.start(8.0 * size / self.eta_net, rate * 1e6)
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

    def _downloaded(self, buf: RoundBuffer, j: int, d: int, plan: Plan, cost, fits: bool) -> bool:
        """Record the finished download; then either an OOM report (False) or the start of local
        training, whose real update the learner computes now in host time (True)."""
        now = self.env.now
        buf.t_download_end_s[j] = now
        buf.bytes_down[j] = cost.bytes_down
        if not fits:
            buf.t_report_s[j] = now
            return False
        buf.t_compute_start_s[j] = now
        self._local_update(buf, j, d, plan)
        return True

    def _local_update(self, buf: RoundBuffer, j: int, d: int, plan: Plan) -> None:
        """Real training (host time) when a learner is attached; simulated time is unaffected. A learner
        with ``submit`` computes the update elsewhere; :meth:`_collect` fetches it at the round's cut-off."""
        if getattr(self.learner, "trains", False):
            submit = getattr(self.learner, "submit", None)
            if submit is not None:
                buf.pending[j] = submit(d, plan, buf.round)
            else:
                self._record_update(buf, j, self.learner.local_update(d, plan, buf.round))

    def _collect(self, buf: RoundBuffer) -> None:
        """The round's submitted updates (every device whose download finished, also those cut off later)."""
        if not buf.pending:
            return
        slots = sorted(buf.pending)
        updates = self.learner.collect([buf.pending[j] for j in slots])
        for j, upd in zip(slots, updates, strict=True):
            self._record_update(buf, j, upd)
        buf.pending.clear()

    @staticmethod
    def _record_update(buf: RoundBuffer, j: int, upd) -> None:
        buf.loss_before[j], buf.loss_after[j], buf.lora_update_norm[j] = (
            upd.loss_before, upd.loss_after, upd.lora_update_norm)
        buf.updates[j] = upd
        for k, v in upd.extra.items():
            buf.extra_column(k)[j] = v

    def _device_fast(self, buf: RoundBuffer, j: int, d: int, plan: Plan, cost, step_s: float, fits: bool,
                     t_down: float, t_up: float, lost: bool):
        """:meth:`_device` for a device with known phase durations (no failure, no contention, no partition)."""
        env = self.env
        try:
            buf.t_available_s[j] = buf.t_download_start_s[j] = env.now
            yield env.timeout(t_down)
            if not self._downloaded(buf, j, d, plan, cost, fits):
                return self._finish(buf, j, OOM)
            compute = plan.local_steps * step_s
            yield env.timeout(compute)
            buf.compute_s[j] = compute
            buf.t_compute_end_s[j] = buf.t_upload_start_s[j] = env.now
            yield env.timeout(t_up)
            buf.bytes_up[j] = cost.bytes_up
            buf.t_upload_end_s[j] = env.now
            if lost:  # sent, never received (faults.lost_upload_prob)
                return self._finish(buf, j, LOST)
            buf.t_report_s[j] = env.now
            return self._finish(buf, j, OK)
        except simpy.Interrupt:
            return None

    def _device(self, buf: RoundBuffer, j: int, d: int, plan: Plan, cost, step_s: float, fits: bool,
                outage_s: float, fail_at: float, lost: bool):
        env = self.env
        fail = int(self._fail_status[j])  # dropped (dynamics), crashed or left (faults) at fail_at
        try:
            if outage_s > 0 and not (yield from self._sleep(outage_s, fail_at)):
                return self._finish(buf, j, fail)
            buf.t_available_s[j] = env.now
            buf.t_download_start_s[j] = env.now
            err = yield from self._transfer(buf, j, d, cost.bytes_down, "down", fail_at)
            if err is not None:
                return self._finish(buf, j, err)
            if not self._downloaded(buf, j, d, plan, cost, fits):
                return self._finish(buf, j, OOM)
            compute = plan.local_steps * step_s
            if not (yield from self._sleep(compute, fail_at)):
                buf.compute_s[j] = env.now - buf.t_compute_start_s[j]
                return self._finish(buf, j, fail)
            buf.compute_s[j] = compute
            buf.t_compute_end_s[j] = env.now
            buf.t_upload_start_s[j] = env.now
            err = yield from self._transfer(buf, j, d, cost.bytes_up, "up", fail_at)
            if err is not None:
                return self._finish(buf, j, err)
            buf.t_upload_end_s[j] = env.now
            buf.bytes_up[j] = cost.bytes_up
            if lost:  # sent, never received (faults.lost_upload_prob)
                return self._finish(buf, j, LOST)
            buf.t_report_s[j] = env.now
            return self._finish(buf, j, OK)
        except simpy.Interrupt:
            return None  # the server already recorded the cut-off

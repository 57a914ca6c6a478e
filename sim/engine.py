"""The discrete-event core: a SimPy server process that runs rounds (:class:`sim.round.Round`).

Round r:

1. The server advances the dynamics (power modes, background load, bandwidth, dropout and fault
   draws) for every device, waits until at least one device that has not left is available,
   selects devices among the available ones (:class:`sim.round_policy.RoundPolicy`), and asks the
   strategy for their plans.
2. A :class:`~sim.round.Round` runs every selected device as a process (download, memory check,
   local training, upload, report; failures end it), waits as the round policy says (``all``,
   ``deadline``, ``first_k``), cuts off the devices still running and collects the updates the
   learner computed (:class:`learning.api.Learner`).
3. The server commits the sparsity of the devices that reported, lets the learner aggregate and
   evaluate, feeds the reports to the strategy and records every device's phases.
4. It stops at the round limit, the simulated-time budget, the target accuracy, or when no device
   is left or ever available again.

Simulated time is ``env.now`` in seconds and advances only by durations from ``devices``; the
learner's host time never moves it.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from algorithms.base import FleetView, Oracle, RoundReports, StrategyContext
from algorithms.registry import make_strategy
from algorithms.sparsity import SparsityRule
from devices.completion import completion_times
from devices.cost import plan_cost
from devices.plan import Plan
from devices.rng import generator
from devices.workload import Workload
from learning.api import Learner, NullLearner
from sim.channel import SharedChannel
from sim.fleet import FleetModel, build_fleet, build_workload
from sim.records import STATUS_CODE, Recorder
from sim.round import Link, Round
from sim.round_policy import round_policy
from sim.scenario import Scenario, ServerSpec
from sim.split_round import SPLIT_COLUMNS, ServerProfile, SplitRound

log = logging.getLogger(__name__)

OK = STATUS_CODE["ok"]


class FleetOracle(Oracle):
    """What a non-prior-free strategy (the oracle) may read: the fleet's device profiles and a
    predictor of each device's round time under a plan."""

    def __init__(self, fleet: FleetModel, workload: Workload, latency_s: float, efficiency: float):
        self._fleet, self._workload = fleet, workload
        self._latency_s, self._efficiency = latency_s, efficiency
        self.profiles = fleet.profiles
        self.device_types = [fleet.group_types[g] for g in fleet.group]

    def predict_round_s(self, devices: np.ndarray, plan: Plan) -> np.ndarray:
        """Expected round time of ``plan`` on ``devices`` from the fleet's *current* state (power mode,
        background load, bandwidth): download + tau x step time + upload
        (:func:`devices.completion.completion_times`), no outage, contention or straggler spike; +inf
        where the plan does not fit the device's memory. A real server cannot compute this."""
        fleet = self._fleet
        devices = np.asarray(devices)
        groups = fleet.group[devices]
        out = np.empty(len(devices))
        for g in np.unique(groups):
            sel = groups == g
            d = devices[sel]
            c = plan_cost(self._workload, plan, fleet.profiles[g].precision)
            n = len(d)
            up = fleet.bandwidth.up_mbps[d]
            t = completion_times(fleet.mode_table, fleet.slots(d), np.full(n, c.flops_per_step),
                                 np.full(n, c.bytes_moved), np.full(n, float(c.kernels)), fleet.load.factor[d],
                                 plan.local_steps, c.bytes_down, c.bytes_up, up * fleet.bandwidth.down_up_ratio[d],
                                 up, self._latency_s, self._efficiency).total_s
            fits = c.memory_model_bytes + fleet.reserve_bytes[g] <= fleet.capacity_bytes[g]
            out[sel] = t if fits else np.inf
        return out


class StrategyError(RuntimeError):
    """A strategy broke the contract (e.g. lowered a device's sparsity)."""


@dataclass
class RunOutput:
    """A run's records (``rounds`` and ``device_rounds`` tables), why it stopped, simulated and host seconds."""

    rounds: object  # pandas DataFrame
    device_rounds: object
    stop_reason: str
    sim_time_s: float
    host_time_s: float


def reports_state(reports: RoundReports) -> dict:
    """A round's reports as plain data (plans as dicts of their fields)."""
    return dataclasses.asdict(reports)


def reports_from_state(st: dict) -> RoundReports:
    """The reports :func:`reports_state` captured."""
    return RoundReports(**{**st, "plans": [Plan(**p) for p in st["plans"]]})


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
        net = sc.network
        self.latency_s = net.k_rtt * net.rtt_ms / 1000.0
        ctx = StrategyContext(
            n_devices=self.fleet.n, rounds=sc.training.rounds, local_steps=sc.training.local_steps,
            batch_size=sc.workload.batch_size, num_layers=self.workload.arch.num_layers,
            rng=generator(sc.seed, f"strategy.{sc.algorithm.name}"), learning=self.learner.trains,
            sparsity=self._sparsity_rule(sc), step_flops=self._step_flops,
        )
        self.strategy = make_strategy(sc.algorithm.name, sc.algorithm.params, ctx)
        if not self.strategy.prior_free:
            ctx.oracle = FleetOracle(self.fleet, self.workload, self.latency_s, net.efficiency)
        self.learner.use_resize(self.strategy.resize)
        self.policy = round_policy(sc.round)
        self._build_env(simpy.Environment())
        self.recorder = Recorder(self.fleet.ids, self.fleet.group_labels, self.fleet.group_types,
                                 self.fleet.placement_names, self.fleet.slot_names)
        self.recorder.extra_names = tuple(self.learner.extra_columns) + (SPLIT_COLUMNS if self.strategy.split else ())
        self.select_rng = generator(sc.seed, "server.selection")
        self.stop_reason = "rounds"
        self.last_eval: dict[str, float] = {}
        self._last_reports: RoundReports | None = None

    def _build_env(self, env: simpy.Environment) -> None:
        """Take ``env`` as the simulation's clock and build the shared channels that live in it
        (``network.contention``: one for all placement classes, one per class, or none)."""
        self.env = env
        net, n_classes = self.sc.network, len(self.fleet.placement_names)
        self._channels: list[SharedChannel] = []
        per_class: list[SharedChannel] | None = None
        if net.contention == "shared":
            self._channels = [SharedChannel(env)]
            per_class = self._channels * n_classes
        elif net.contention == "per_class":
            self._channels = [SharedChannel(env) for _ in range(n_classes)]
            per_class = self._channels
        self.link = Link(self.latency_s, net.efficiency, per_class)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """Everything a run resumed at this round boundary needs, as plain data: the clock, the fleet,
        the strategy, the round policy, the records so far, the selection RNG, the channels' counters,
        the last round's reports, the last evaluation and the learner's state."""
        last = self._last_reports
        return {"now_s": float(self.env.now), "fleet": self.fleet.state(), "strategy": self.strategy.state(),
                "policy": self.policy.state(), "recorder": self.recorder.state(),
                "select_rng": self.select_rng.bit_generator.state, "channels": [c.state() for c in self._channels],
                "stop_reason": self.stop_reason, "last_eval": dict(self.last_eval),
                "last_reports": None if last is None else reports_state(last), "learner": self.learner.state()}

    def set_state(self, st: dict) -> None:
        """Restore :meth:`state` onto a simulation freshly built from the same scenario; the clock
        restarts at the saved time."""
        self._build_env(simpy.Environment(initial_time=float(st["now_s"])))
        for ch, cs in zip(self._channels, st["channels"], strict=True):
            ch.set_state(cs)
        self.fleet.set_state(st["fleet"])
        self.strategy.set_state(st["strategy"])
        self.policy.set_state(st["policy"])
        self.recorder.set_state(st["recorder"])
        self.select_rng.bit_generator.state = st["select_rng"]
        self.stop_reason = str(st["stop_reason"])
        self.last_eval = dict(st["last_eval"])
        self._last_reports = None if st["last_reports"] is None else reports_from_state(st["last_reports"])
        self.learner.set_state(st["learner"])

    # ------------------------------------------------------------------ server
    def run(self) -> RunOutput:
        """Run every round; the records, why the run stopped, and the simulated and host seconds."""
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
        """The server process: round after round until a stop condition (module docstring, step 4)."""
        sc, env = self.sc, self.env
        for r in range(self.start_round, sc.training.rounds):
            if sc.training.time_budget_s is not None and env.now >= sc.training.time_budget_s:
                self.stop_reason = "time_budget"
                return
            avail = yield from self._available(r)
            if avail is None:
                return
            yield from self._round(r, self.policy.select(np.flatnonzero(avail), self.select_rng))
            if sc.training.target_accuracy is not None and self.last_eval.get("accuracy", -1.0) >= sc.training.target_accuracy:
                self.stop_reason = "target_accuracy"
                return
            if self.checkpoint is not None and r + 1 < sc.training.rounds:
                self.checkpoint(self, r + 1)

    def _available(self, r: int):
        """Advance the fleet to round ``r`` and wait until a device is available; returns the mask of
        available devices, or None (and the stop reason) when none is left or ever comes on again."""
        fleet, env = self.fleet, self.env
        fleet.begin_round(r)
        alive = fleet.faults.alive() if fleet.faults is not None else np.ones(fleet.n, dtype=bool)
        if not alive.any():
            self.stop_reason = "fleet_empty"  # every device left (faults.leave_prob)
            return None
        avail = fleet.availability.available_mask(env.now) & alive
        if not avail.any():
            t_next = self._next_availability(env.now, alive)
            if not math.isfinite(t_next):
                self.stop_reason = "no_device_available"
                return None
            yield env.timeout(t_next - env.now)
            avail = fleet.availability.available_mask(env.now) & alive
        return avail

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

    def _round(self, r: int, selected: np.ndarray):
        """Plan, run and record round ``r`` of the ``selected`` devices."""
        fleet = self.fleet
        view = FleetView(round=r, device_ids=fleet.ids, prune_ratio=fleet.prune_ratio, last=self._last_reports)
        plans = self.strategy.plan(r, view, selected)
        self._check_plans(r, selected, plans)
        rnd = self._new_round(r, selected, plans)
        yield from rnd.run()
        buf = rnd.buf
        self.policy.observe(buf, rnd.deadline_s)
        ok_idx = np.flatnonzero(buf.status == OK)
        fleet.prune_ratio[selected[ok_idx]] = [plans[j].prune_ratio for j in ok_idx]
        extra = self._learn(rnd, ok_idx) if self.learner.trains else {}
        reports = RoundReports(
            round=r, devices=selected, plans=plans, status=buf.status_names(), t_start_s=rnd.t_start_s,
            t_report_s=buf.t_report_s, compute_s=buf.compute_s, bytes_up=buf.bytes_up, bytes_down=buf.bytes_down,
            loss_before=buf.loss_before, loss_after=buf.loss_after, lora_update_norm=buf.lora_update_norm,
            t_end_s=rnd.t_end_s, extra=buf.extra)
        cols = self.strategy.observe(r, reports)
        row = self.recorder.add_round(buf, group=rnd.groups, slots=rnd.slots, placement=fleet.placement[selected],
                                      load=rnd.load, flops=rnd.flops, memory=rnd.memory, capacity=rnd.capacity,
                                      t_end_s=rnd.t_end_s, deadline_s=rnd.deadline_s, extra=extra,
                                      strategy_cols=cols)
        self._last_reports = reports
        if self.on_round is not None:
            self.on_round(row)

    def _new_round(self, r: int, selected: np.ndarray, plans: list[Plan]) -> Round:
        """Round ``r``: a :class:`~sim.split_round.SplitRound` for a split-learning strategy (its server
        from the scenario's ``server`` section, or the defaults), else a plain :class:`~sim.round.Round`."""
        args = (self.env, r, selected, plans, self.fleet, self.workload, self.link, self.learner, self.policy,
                self.sc.dynamics.power_mode.switch_outage_s)
        if not self.strategy.split:
            return Round(*args)
        spec = self.sc.server or ServerSpec()
        return SplitRound(*args, server=ServerProfile(spec.peak_tflops, spec.efficiency))

    def _check_plans(self, r: int, selected: np.ndarray, plans: list[Plan]) -> None:
        """Refuse plans that break the strategy contract: one per device, sparsity never lowered,
        LoRA layers inside the model, split plans exactly from a split strategy."""
        fleet = self.fleet
        if len(plans) != len(selected):
            raise StrategyError(f"strategy returned {len(plans)} plans for {len(selected)} devices")
        for d, plan in zip(selected, plans):
            if plan.prune_ratio < fleet.prune_ratio[d] - 1e-12:
                raise StrategyError(f"round {r}: plan lowers {fleet.ids[d]}'s sparsity "
                                    f"{fleet.prune_ratio[d]} -> {plan.prune_ratio}")
            if plan.lora_layers is not None and max(plan.lora_layers) >= self.workload.arch.num_layers:
                raise StrategyError(f"round {r}: plan for {fleet.ids[d]} names LoRA layers beyond the model")
            if (plan.split_layers is not None) != self.strategy.split:
                raise StrategyError(f"round {r}: plan for {fleet.ids[d]} has split_layers {plan.split_layers}, "
                                    f"but the strategy's split is {self.strategy.split}")

    def _learn(self, rnd: Round, ok_idx: np.ndarray) -> dict:
        """Aggregate the reported updates; on evaluation rounds evaluate and return the round's
        accuracy columns (empty otherwise)."""
        sc, buf, r = self.sc, rnd.buf, rnd.index
        ok_dev = rnd.selected[ok_idx]
        self.learner.aggregate([int(d) for d in ok_dev], [buf.updates.get(j) for j in ok_idx],
                               self.strategy.aggregator, self._agg_weights(ok_dev, [rnd.plans[j] for j in ok_idx]))
        if not sc.training.evaluates(r):
            return {}
        self.last_eval = self.learner.evaluate(r)
        extra = {k: self.last_eval.get(k, math.nan) for k in ("accuracy", "accuracy_min", "accuracy_max")}
        extra["test_loss"] = self.last_eval.get("loss", math.nan)
        log.info("round %d: accuracy %.4f (min %.4f, max %.4f), test loss %.4f, mean prune ratio %.3f", r,
                 extra["accuracy"], extra["accuracy_min"], extra["accuracy_max"], extra["test_loss"],
                 float(np.mean([p.prune_ratio for p in rnd.plans])))
        return extra

    def _step_flops(self, plan: Plan) -> float:
        """FLOPs of one local step of ``plan`` on this run's model (forward + backward; device-free)."""
        c = plan_cost(self.workload, plan, "fp32")
        return c.flops_fwd + c.flops_bwd

    def _sparsity_rule(self, sc: Scenario) -> SparsityRule:
        """The ``sparsity`` section for the strategy; data weights only where a learner holds data."""
        sp = sc.sparsity
        weights = self.learner.data_sizes() if sp.weighting == "data" and self.learner.trains else None
        return SparsityRule(sp.constraint, sp.spread, weights)

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

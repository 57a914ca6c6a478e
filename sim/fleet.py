"""Build the simulated fleet from a scenario: profiles, mode table, network and dynamics processes.

Named random streams (``devices.rng``): ``fleet.bandwidth_mean``, ``fleet.trace_offset``,
``fleet.bandwidth_x0``, ``fleet.dropout_prob``, ``fleet.availability_phase``, ``fleet.initial_mode``
(one generator per device each) and per-device per-round streams ``dyn.power_mode``, ``dyn.load``,
``dyn.bandwidth``, ``dyn.dropout``, ``dyn.dropout_phase``, and ``dyn.power_dwell`` (dwell times, only
for ``power_mode.kind: dwell``, so the other kinds' draws are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devices.catalog import GIB, DeviceType, PowerMode, load_catalog
from devices.cost import plan_cost, total_params
from devices.dynamics import Availability, BackgroundLoad, Dropout, Dwell, PowerModeProcess, read_availability
from devices.errors import DeviceInputError
from devices.faults import Faults
from devices.named_calibrations import named_calibration
from devices.network import BandwidthModel, Trace, load_trace
from devices.noise import FixedPlanCost, RoundTimes, log_round_times
from devices.plan import Plan
from devices.rng import PerDeviceStream, generator
from devices.timing import DeviceProfile, ModeTable
from devices.workload import ModelArch, Workload, load_arch
from sim.scenario import Calibration, CustomMode, FleetGroup, Scenario, ScenarioError


def _custom_mode(type_id: str, cm: CustomMode, mode_id: int) -> PowerMode:
    fp32 = cm.fp32_tflops * 1e12
    return PowerMode(
        device_type=type_id, name=cm.name, mode_id=mode_id, is_default=False,
        cpu_cores_online=cm.cpu_cores_online, cpu_max_ghz=cm.cpu_max_ghz, gpu_sms=0, gpu_max_mhz=0.0,
        emc_mhz=0.0, fp32_peak_flops=fp32,
        fp16_peak_flops=cm.fp16_tflops * 1e12 if cm.fp16_tflops else 2 * fp32,
        mem_bw_bytes_per_s=cm.mem_bw_gbps * 1e9, fp16_on_tensor_cores=cm.fp16_on_tensor_cores,
        source="scenario calibration", notes="custom mode",
    )


def build_workload(sc: Scenario, base_dir: Path | None) -> Workload:
    arch: ModelArch = load_arch(sc.workload.model, base_dir)
    w = sc.workload
    probe = Workload(arch=arch, seq_len=w.seq_len, task=w.task, num_labels=w.num_labels)
    wdt = w.weight_dtype
    if wdt == "auto":
        wdt = "fp16" if total_params(arch, probe) > 1e9 else "fp32"
    return Workload(
        arch=arch, seq_len=w.seq_len, precision=w.precision, weight_dtype=wdt,
        lora_targets=tuple(w.lora_targets), task=w.task, num_labels=w.num_labels, train_head=w.train_head,
        comm_dtype=w.comm_dtype, frozen_activation_factor=w.frozen_activation_factor,
        message_overhead_bytes=w.message_overhead_bytes,
    )


@dataclass
class FleetModel:
    """Struct of arrays over devices (index d = position in ``ids``) plus per-group profiles."""

    ids: list[str]
    group: np.ndarray
    group_labels: list[str]
    group_types: list[str]
    profiles: list[DeviceProfile]
    placement: np.ndarray
    placement_names: list[str]
    slot_offset: np.ndarray  # per group: first global mode slot
    slot_names: list[str]  # global mode slot -> mode name
    mode_table: ModeTable
    capacity_bytes: np.ndarray  # per group
    reserve_bytes: np.ndarray  # per group
    bandwidth: BandwidthModel
    modes: PowerModeProcess
    load: BackgroundLoad
    dropout: Dropout
    availability: Availability
    prune_ratio: np.ndarray = field(default=None)  # committed sparsity per device
    faults: Faults | None = None  # scenario key faults (devices/faults.py)

    @property
    def n(self) -> int:
        return len(self.ids)

    def begin_round(self, r: int) -> None:
        """Advance every per-round process (all devices, every round, fixed order)."""
        self.modes.begin_round(r)
        self.load.begin_round(r)
        self.bandwidth.begin_round(r)
        self.dropout.begin_round(r)
        if self.faults is not None:
            self.faults.begin_round(r)

    def slots(self, devices: np.ndarray) -> np.ndarray:
        return self.slot_offset[self.group[devices]] + self.modes.current[devices]

    def state(self) -> dict:
        """Every per-round process's state and each device's committed sparsity (checkpoints)."""
        return {"modes": self.modes.state(), "load": self.load.state(), "bandwidth": self.bandwidth.state(),
                "dropout": self.dropout.state(), "prune_ratio": self.prune_ratio.copy(),
                "faults": self.faults.state() if self.faults is not None else None}

    def set_state(self, st: dict) -> None:
        """Restore :meth:`state` onto a fleet built from the same scenario."""
        self.modes.set_state(st["modes"])
        self.load.set_state(st["load"])
        self.bandwidth.set_state(st["bandwidth"])
        self.dropout.set_state(st["dropout"])
        self.prune_ratio = np.array(st["prune_ratio"])
        if self.faults is not None:
            self.faults.set_state(st["faults"])


def _resolve(base_dir: Path | None, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() or base_dir is None else base_dir / q


def build_fleet(sc: Scenario, base_dir: Path | None) -> FleetModel:
    """The fleet a scenario describes: one profile per group, per-device placement, and every process.

    Draws its per-device constants in a fixed order (``fleet.initial_mode``, ``fleet.bandwidth_mean``,
    ``fleet.trace_offset``, ``fleet.bandwidth_x0``, ``fleet.dropout_prob``, ``fleet.availability_phase``);
    each name is its own stream, so a draw never depends on another's.
    """
    cat = load_catalog()
    profiles = [_group_profile(sc, g, cat[g.type]) for g in sc.fleet.groups]
    ids, labels = sc.device_ids()
    n = len(ids)
    group = np.array([gi for gi, g in enumerate(sc.fleet.groups) for _ in range(g.count)], dtype=np.int64)
    class_names = list(sc.network.classes)
    placement = np.array([class_names.index(c) for g in sc.fleet.groups for c, k in g.placement_counts().items()
                          for _ in range(k)], dtype=np.int64)
    pm = sc.dynamics.power_mode
    counts = np.array([len(p.modes) for p in profiles], dtype=np.int64)[group]
    dw = pm.dwell_rounds
    dwell = (Dwell(dw.kind, dw.mean, dw.low, dw.high), PerDeviceStream(sc.seed, "dyn.power_dwell", n)) \
        if pm.kind == "dwell" else (None, None)
    modes = PowerModeProcess(pm.kind, counts, _initial_modes(sc, profiles, group), pm.every_rounds, pm.stay_prob,
                             PerDeviceStream(sc.seed, "dyn.power_mode", n), *dwell)
    bandwidth = _bandwidth(sc, base_dir, placement, class_names)
    bl = sc.dynamics.background_load
    load = BackgroundLoad(bl.kind, bl.mu, bl.sigma, PerDeviceStream(sc.seed, "dyn.load", n, dist="normal"), n, bl.phi)
    slot_offset = np.cumsum([0] + [len(p.modes) for p in profiles[:-1]]).astype(np.int64)
    return FleetModel(
        ids=ids, group=group, group_labels=[g.label for g in sc.fleet.groups],
        group_types=[g.type for g in sc.fleet.groups], profiles=profiles, placement=placement,
        placement_names=class_names, slot_offset=slot_offset, slot_names=[m.name for p in profiles for m in p.modes],
        mode_table=ModeTable.build([(p, m) for p in profiles for m in p.modes]),
        capacity_bytes=np.array([p.capacity_bytes for p in profiles]),
        reserve_bytes=np.array([p.runtime_reserve_bytes for p in profiles]), bandwidth=bandwidth, modes=modes,
        load=load, dropout=_dropout(sc, n), availability=_availability(sc, base_dir, ids, labels),
        prune_ratio=np.zeros(n),
        faults=Faults(sc.faults, sc.seed, n, placement, class_names) if sc.faults is not None else None,
    )


def group_calibration(sc: Scenario, g: FleetGroup) -> Calibration:
    """The group's calibration: the fleet's named calibration (``fleet.calibration``) for its board type,
    overridden by every key the group sets itself."""
    named = named_calibration(sc.fleet.calibration, g.type)
    if not named:
        return g.calibration
    explicit = g.calibration.model_dump(include=g.calibration.model_fields_set)
    return Calibration.model_validate({**named, **explicit})


def _group_profile(sc: Scenario, g: FleetGroup, dt: DeviceType) -> DeviceProfile:
    """One group's calibrated profile: its allowed power modes (catalog and custom, in order) and precision."""
    cal = group_calibration(sc, g)
    customs = [_custom_mode(g.type, cm, 100 + k) for k, cm in enumerate(cal.custom_modes)]
    by_name = {m.name: m for m in dt.modes + tuple(customs)}
    names = g.power_modes or [m.name for m in dt.modes] + [m.name for m in customs]
    precision = cal.precision if cal.precision != "auto" else sc.workload.precision
    if precision == "auto":
        precision = dt.default_precision
    return DeviceProfile(
        dtype=dt, modes=tuple(by_name[n] for n in names), precision=precision, efficiency=cal.efficiency,
        mem_efficiency=cal.mem_efficiency, runtime_reserve_bytes=cal.runtime_reserve_gb * GIB,
        ram_bytes=cal.ram_gb * GIB if cal.ram_gb is not None else None, speed_factor=cal.speed_factor,
    )


def _initial_modes(sc: Scenario, profiles: list[DeviceProfile], group: np.ndarray) -> np.ndarray:
    """Each device's starting mode index: the group's ``initial_mode``, else the default or a uniform draw."""
    n = len(group)
    u_init = np.array([generator(sc.seed, "fleet.initial_mode", d).random() for d in range(n)])
    init = np.empty(n, dtype=np.int64)
    for gi, (g, prof) in enumerate(zip(sc.fleet.groups, profiles)):
        sel = group == gi
        n_modes = len(prof.modes)
        if g.initial_mode:
            init[sel] = [m.name for m in prof.modes].index(g.initial_mode)
        elif sc.dynamics.power_mode.initial == "default":
            init[sel] = next((i for i, m in enumerate(prof.modes) if m.is_default), 0)
        else:
            init[sel] = np.minimum((u_init[sel] * n_modes).astype(np.int64), n_modes - 1)
    return init


def _bandwidth(sc: Scenario, base_dir: Path | None, placement: np.ndarray, class_names: list[str]) -> BandwidthModel:
    """Per-device mean uplink drawn uniformly in its class's range, class traces with a random offset, AR(1) noise."""
    n, seed = len(placement), sc.seed
    classes = [sc.network.classes[class_names[c]] for c in placement]
    lo = np.array([c.mbps[0] for c in classes])
    hi = np.array([c.mbps[1] for c in classes])
    u_bw = np.array([generator(seed, "fleet.bandwidth_mean", d).random() for d in range(n)])
    traces_by_class: dict[str, Trace | None] = {}
    for name, bc in sc.network.classes.items():
        try:
            traces_by_class[name] = load_trace(_resolve(base_dir, bc.trace)) if bc.trace else None
        except ValueError as e:
            raise ScenarioError(f"network.classes.{name}.trace: {e}") from None
    traces = [traces_by_class[class_names[c]] for c in placement]
    offsets = np.array([generator(seed, "fleet.trace_offset", d).random() * (t.period_s if t else 0.0)
                        for d, t in enumerate(traces)])
    x0 = np.array([generator(seed, "fleet.bandwidth_x0", d).standard_normal() for d in range(n)])
    fl = sc.network.fluctuation
    return BandwidthModel(lo + (hi - lo) * u_bw, np.array([c.down_up_ratio for c in classes]), traces, offsets,
                          fl.phi, fl.sigma_log, sc.network.min_mbps,
                          PerDeviceStream(seed, "dyn.bandwidth", n, dist="normal"), x0)


def _dropout(sc: Scenario, n: int) -> Dropout:
    """Per-device dropout probability (a constant, or Beta(a, b) drawn once per device) and its streams."""
    do = sc.dynamics.dropout
    if do.beta is not None:
        prob = np.array([generator(sc.seed, "fleet.dropout_prob", d).beta(*do.beta) for d in range(n)])
    else:
        prob = np.full(n, do.prob)
    return Dropout(prob, PerDeviceStream(sc.seed, "dyn.dropout", n),
                   PerDeviceStream(sc.seed, "dyn.dropout_phase", n))


def _availability(sc: Scenario, base_dir: Path | None, ids: list[str], labels: list[str]) -> Availability:
    """``always``, ``periodic`` (a uniform random phase per device) or ``trace`` (on-intervals from a CSV)."""
    av, n = sc.dynamics.availability, len(ids)
    if av.kind == "periodic":
        phase = np.array([generator(sc.seed, "fleet.availability_phase", d).random() * av.period_s for d in range(n)])
        return Availability("periodic", n, av.period_s, av.on_fraction, phase)
    if av.kind == "trace":
        try:
            intervals = read_availability(_resolve(base_dir, av.trace), ids, labels)
        except DeviceInputError as e:
            raise ScenarioError(f"dynamics.availability.trace: {e}") from None
        return Availability("trace", n, intervals=intervals)
    return Availability("always", n)


def round_time_noise(sc: Scenario, base_dir: Path | None, workload: Workload, plan: Plan, latency_s: float,
                     efficiency: float) -> RoundTimes:
    """Log round times and their state predictor (``devices.noise``) of a fresh fleet of ``sc`` running
    ``plan`` on every device for the scenario's rounds (at least 2), with the run's own dynamics streams."""
    fleet = build_fleet(sc, base_dir)
    costs = [plan_cost(workload, plan, p.precision) for p in fleet.profiles]
    per_device = [costs[g] for g in fleet.group]
    cost = FixedPlanCost(*(np.array([float(getattr(c, k)) for c in per_device])
                           for k in ("flops_per_step", "bytes_moved", "kernels", "bytes_down", "bytes_up")),
                         local_steps=plan.local_steps)
    return log_round_times(fleet, cost, max(2, sc.training.rounds), latency_s, efficiency)

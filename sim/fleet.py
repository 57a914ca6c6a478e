"""Build the simulated fleet from a scenario: profiles, mode table, network and dynamics processes.

Named random streams (``devices.rng``): ``fleet.bandwidth_mean``, ``fleet.trace_offset``,
``fleet.dropout_prob``, ``fleet.availability_phase``, ``fleet.initial_mode`` (one generator per
device each) and per-device per-round streams ``dyn.power_mode``, ``dyn.load``, ``dyn.bandwidth``,
``dyn.dropout``, ``dyn.dropout_phase``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devices.catalog import GIB, PowerMode, load_catalog
from devices.cost import total_params
from devices.dynamics import Availability, BackgroundLoad, Dropout, PowerModeProcess
from devices.faults import Faults
from devices.network import BandwidthModel, Trace, load_trace
from devices.rng import PerDeviceStream, generator
from devices.timing import DeviceProfile, ModeTable
from devices.workload import ModelArch, Workload, load_arch
from sim.loader import ScenarioError
from sim.scenario import CustomMode, Scenario


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
        return {"modes": self.modes.state(), "load": self.load.state(), "bandwidth": self.bandwidth.state(),
                "dropout": self.dropout.state(), "prune_ratio": self.prune_ratio.copy()}


def device_ids(sc: Scenario) -> tuple[list[str], list[str]]:
    """Device ids (``<group label>-<index>``, zero-padded) and each device's group label, in fleet order."""
    ids: list[str] = []
    labels: list[str] = []
    for g in sc.fleet.groups:
        width = max(3, len(str(g.count - 1)))
        ids.extend(f"{g.label}-{k:0{width}d}" for k in range(g.count))
        labels.extend([g.label] * g.count)
    return ids, labels


def _resolve(base_dir: Path | None, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() or base_dir is None else base_dir / q


def build_fleet(sc: Scenario, base_dir: Path | None) -> FleetModel:
    cat = load_catalog()
    seed = sc.seed
    group: list[int] = []
    profiles: list[DeviceProfile] = []
    slot_entries: list[tuple[DeviceProfile, PowerMode]] = []
    slot_names: list[str] = []
    slot_offset: list[int] = []
    default_idx: list[int] = []
    n_modes: list[int] = []
    init_idx: list[int | None] = []
    for gi, g in enumerate(sc.fleet.groups):
        dt = cat[g.type]
        cal = g.calibration
        customs = [_custom_mode(g.type, cm, 100 + k) for k, cm in enumerate(cal.custom_modes)]
        by_name = {m.name: m for m in dt.modes + tuple(customs)}
        names = g.power_modes or [m.name for m in dt.modes] + [m.name for m in customs]
        modes = tuple(by_name[n] for n in names)
        precision = cal.precision if cal.precision != "auto" else sc.workload.precision
        if precision == "auto":
            precision = dt.default_precision
        prof = DeviceProfile(
            dtype=dt, modes=modes, precision=precision, efficiency=cal.efficiency,
            mem_efficiency=cal.mem_efficiency, runtime_reserve_bytes=cal.runtime_reserve_gb * GIB,
            ram_bytes=cal.ram_gb * GIB if cal.ram_gb is not None else None, speed_factor=cal.speed_factor,
        )
        profiles.append(prof)
        slot_offset.append(len(slot_entries))
        slot_entries.extend((prof, m) for m in modes)
        slot_names.extend(m.name for m in modes)
        n_modes.append(len(modes))
        dflt = next((i for i, m in enumerate(modes) if m.is_default), 0)
        default_idx.append(dflt)
        init_idx.append(names.index(g.initial_mode) if g.initial_mode else None)
        group.extend([gi] * g.count)
    ids, _ = device_ids(sc)

    n = len(ids)
    group_a = np.array(group, dtype=np.int64)
    class_names = list(sc.network.classes)
    placement_l: list[int] = []
    for g in sc.fleet.groups:
        for cname, k in g.placement_counts().items():
            placement_l.extend([class_names.index(cname)] * k)
    placement = np.array(placement_l, dtype=np.int64)

    # initial power mode
    counts = np.array(n_modes, dtype=np.int64)[group_a]
    u_init = np.array([generator(seed, "fleet.initial_mode", d).random() for d in range(n)])
    init = np.empty(n, dtype=np.int64)
    for gi in range(len(profiles)):
        sel = group_a == gi
        if init_idx[gi] is not None:
            init[sel] = init_idx[gi]
        elif sc.dynamics.power_mode.initial == "default":
            init[sel] = default_idx[gi]
        else:
            init[sel] = np.minimum((u_init[sel] * n_modes[gi]).astype(np.int64), n_modes[gi] - 1)
    pm = sc.dynamics.power_mode
    modes_proc = PowerModeProcess(pm.kind, counts, init, pm.every_rounds, pm.stay_prob,
                                  PerDeviceStream(seed, "dyn.power_mode", n))

    # bandwidth
    lo = np.array([sc.network.classes[class_names[c]].mbps[0] for c in placement])
    hi = np.array([sc.network.classes[class_names[c]].mbps[1] for c in placement])
    u_bw = np.array([generator(seed, "fleet.bandwidth_mean", d).random() for d in range(n)])
    mean_mbps = lo + (hi - lo) * u_bw
    ratio = np.array([sc.network.classes[class_names[c]].down_up_ratio for c in placement])
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
    bw = BandwidthModel(mean_mbps, ratio, traces, offsets, fl.phi, fl.sigma_log, sc.network.min_mbps,
                        PerDeviceStream(seed, "dyn.bandwidth", n, dist="normal"), x0)

    bl = sc.dynamics.background_load
    load = BackgroundLoad(bl.kind, bl.mu, bl.sigma, PerDeviceStream(seed, "dyn.load", n, dist="normal"), n)

    do = sc.dynamics.dropout
    if do.beta is not None:
        prob = np.array([generator(seed, "fleet.dropout_prob", d).beta(*do.beta) for d in range(n)])
    else:
        prob = np.full(n, do.prob)
    dropout = Dropout(prob, PerDeviceStream(seed, "dyn.dropout", n), PerDeviceStream(seed, "dyn.dropout_phase", n))

    av = sc.dynamics.availability
    if av.kind == "periodic":
        phase = np.array([generator(seed, "fleet.availability_phase", d).random() * av.period_s for d in range(n)])
        availability = Availability("periodic", n, av.period_s, av.on_fraction, phase)
    elif av.kind == "trace":
        availability = Availability("trace", n, intervals=read_availability(
            _resolve(base_dir, av.trace), ids, [sc.fleet.groups[gi].label for gi in group]))
    else:
        availability = Availability("always", n)

    table = ModeTable.build(slot_entries)
    return FleetModel(
        ids=ids, group=group_a, group_labels=[g.label for g in sc.fleet.groups],
        group_types=[g.type for g in sc.fleet.groups], profiles=profiles, placement=placement,
        placement_names=class_names, slot_offset=np.array(slot_offset, dtype=np.int64), slot_names=slot_names,
        mode_table=table, capacity_bytes=np.array([p.capacity_bytes for p in profiles]),
        reserve_bytes=np.array([p.runtime_reserve_bytes for p in profiles]), bandwidth=bw, modes=modes_proc,
        load=load, dropout=dropout, availability=availability, prune_ratio=np.zeros(n),
        faults=Faults(sc.faults, seed, n, placement, class_names) if sc.faults is not None else None,
    )


def read_availability(path: Path, ids: list[str], labels: list[str]) -> list[np.ndarray]:
    """CSV ``device,start_s,end_s``; ``device`` is a device id, a group label or ``*`` (all)."""
    per: list[list[tuple[float, float]]] = [[] for _ in ids]
    index = {d: i for i, d in enumerate(ids)}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"device", "start_s", "end_s"} <= set(reader.fieldnames):
                raise ScenarioError(f"dynamics.availability.trace: {path} needs header device,start_s,end_s")
            for n, row in enumerate(reader, start=2):
                try:
                    s, e = float(row["start_s"]), float(row["end_s"])
                except (TypeError, ValueError):
                    raise ScenarioError(f"dynamics.availability.trace: {path}:{n}: start_s/end_s must be numbers") from None
                if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
                    raise ScenarioError(f"dynamics.availability.trace: {path}:{n}: need finite start_s < end_s")
                key = row["device"]
                if key == "*":
                    targets = range(len(ids))
                elif key in index:
                    targets = [index[key]]
                else:
                    targets = [i for i, lab in enumerate(labels) if lab == key]
                    if not targets:
                        raise ScenarioError(f"dynamics.availability.trace: {path}:{n}: unknown device or group {key!r}")
                for i in targets:
                    per[i].append((s, e))
    except OSError as e:
        raise ScenarioError(f"dynamics.availability.trace: cannot read {path}: {e}") from None
    out = []
    for iv in per:
        iv.sort()
        merged: list[list[float]] = []
        for s, e in iv:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out.append(np.array(merged, dtype=float).reshape(-1, 2))
    return out

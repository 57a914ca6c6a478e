"""The Jetson catalog: device types and their nvpmodel power modes.

Data: ``devices/data/device_types.csv`` (one row per board: architecture, module RAM in GiB, CPU
clock, default precision) and ``devices/data/power_modes.csv`` (one row per nvpmodel power mode:
cores and clocks from NVIDIA's nvpmodel configuration files and module datasheets). Every row's
``source`` column names its documents; ``docs/device-model.md`` section 1 lists them with URLs. The
CSVs hold raw clocks and unit counts; the peaks are derived here:

* FP32 peak [FLOP/s]    = SMs x CUDA cores/SM x 2 FLOP/FMA x f_GPU
* FP16 peak [FLOP/s]    = SMs x tensor-core FLOP/clk/SM x f_GPU      (Volta 1024, Ampere GA10B 2048)
                        = 2 x FP32 peak (half2)                       on Pascal/Maxwell (no tensor cores)
* DRAM bandwidth [B/s]  = EMC clock x 2 (DDR) x bus bits / 8

Default achieved fractions of peak (assumed; the torch2trt and PockEngine evidence behind them is in
``docs/device-model.md`` section 2):
``fp32`` 0.35 of the FP32 peak; ``amp``/``fp16`` 0.20 of the tensor-core peak on Volta/Ampere,
0.35 of the half2 peak on Pascal/Maxwell; DRAM 0.7 of peak bandwidth.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

PRECISIONS = ("fp32", "amp", "fp16")
"""Compute precisions: ``fp32`` (CUDA-core FP32), ``amp`` (fp32 master weights, fp16 math on
tensor cores or half2), ``fp16`` (fp16 weights and math)."""

DEFAULT_EFFICIENCY_FP32 = 0.35
DEFAULT_EFFICIENCY_TENSOR_CORE = 0.20
DEFAULT_EFFICIENCY_HALF2 = 0.35
DEFAULT_EFFICIENCY_MEM = 0.7
DEFAULT_RUNTIME_RESERVE_GIB = 1.5
"""OS + CUDA context + PyTorch runtime of a headless board, GiB (assumed; an Orin Nano 8 GB owner reports
about 5.2 GB left for models, and the desktop alone takes about 0.8 GB)."""


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel power mode of one device type, with its derived peaks."""

    device_type: str
    name: str
    mode_id: int
    is_default: bool
    cpu_cores_online: int
    cpu_max_ghz: float
    gpu_sms: int
    gpu_max_mhz: float
    emc_mhz: float
    fp32_peak_flops: float
    fp16_peak_flops: float
    mem_bw_bytes_per_s: float
    fp16_on_tensor_cores: bool
    source: str
    notes: str = ""

    def peak_flops(self, precision: str) -> float:
        """Peak FLOP/s for ``precision`` (``fp32`` uses CUDA cores; ``amp``/``fp16`` the FP16 path)."""
        return self.fp32_peak_flops if precision == "fp32" else self.fp16_peak_flops

    def default_efficiency(self, precision: str) -> float:
        """Achieved fraction of :meth:`peak_flops` in eager PyTorch training (the defaults above)."""
        if precision == "fp32":
            return DEFAULT_EFFICIENCY_FP32
        return DEFAULT_EFFICIENCY_TENSOR_CORE if self.fp16_on_tensor_cores else DEFAULT_EFFICIENCY_HALF2


@dataclass(frozen=True)
class DeviceType:
    """A Jetson module: memory, architecture and its power modes (in catalog order)."""

    type: str
    name: str
    arch: str
    ram_bytes: int
    cpu_max_ghz: float
    default_precision: str
    source: str
    notes: str
    modes: tuple[PowerMode, ...]

    @property
    def default_mode(self) -> PowerMode:
        return next(m for m in self.modes if m.is_default)

    @property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modes)

    def mode(self, name: str) -> PowerMode:
        for m in self.modes:
            if m.name == name:
                return m
        raise KeyError(f"unknown power mode {name!r} for {self.type}; allowed: {', '.join(self.mode_names)}")


GIB = 1024**3


def _derive_mode(row: dict[str, str]) -> PowerMode:
    sms = int(row["gpu_sms"])
    f_hz = float(row["gpu_max_mhz"]) * 1e6
    fp32 = sms * int(row["cuda_cores_per_sm"]) * 2 * f_hz
    tc = int(row["tc_flop_per_clk_per_sm"])
    fp16 = sms * tc * f_hz if tc else 2 * fp32
    bw = float(row["emc_mhz"]) * 1e6 * 2 * int(row["bus_bits"]) / 8
    return PowerMode(
        device_type=row["type"],
        name=row["mode"],
        mode_id=int(row["mode_id"]),
        is_default=row["is_default"] == "1",
        cpu_cores_online=int(row["cpu_cores_online"]),
        cpu_max_ghz=float(row["cpu_max_ghz"]),
        gpu_sms=sms,
        gpu_max_mhz=float(row["gpu_max_mhz"]),
        emc_mhz=float(row["emc_mhz"]),
        fp32_peak_flops=fp32,
        fp16_peak_flops=fp16,
        mem_bw_bytes_per_s=bw,
        fp16_on_tensor_cores=bool(tc),
        source=row["source"],
        notes=row["notes"],
    )


@functools.lru_cache(maxsize=1)
def load_catalog() -> dict[str, DeviceType]:
    """Read the catalog CSVs once; returns ``{type id: DeviceType}`` in file order."""
    with open(DATA_DIR / "power_modes.csv", newline="", encoding="utf-8") as f:
        modes = [_derive_mode(r) for r in csv.DictReader(f)]
    out: dict[str, DeviceType] = {}
    with open(DATA_DIR / "device_types.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            own = tuple(m for m in modes if m.device_type == r["type"])
            out[r["type"]] = DeviceType(
                type=r["type"],
                name=r["name"],
                arch=r["arch"],
                ram_bytes=int(float(r["ram_gib"]) * GIB),
                cpu_max_ghz=float(r["cpu_max_ghz"]),
                default_precision=r["default_precision"],
                source=r["source"],
                notes=r["notes"],
                modes=own,
            )
    return out


def device_type(type_id: str) -> DeviceType:
    """Look up a device type by id, with the allowed ids in the error."""
    cat = load_catalog()
    if type_id not in cat:
        raise KeyError(f"unknown device type {type_id!r}; allowed: {', '.join(cat)}")
    return cat[type_id]

"""Timing model: seconds per local step and the memory-fit check.

A roofline plus a fixed kernel-launch overhead (assumed form and constants;
``docs/device-model.md`` section 4)::

    t_comp = F_step / (eta * P_peak(mode, precision))
    t_mem  = B_step / (eta_mem * BW(mode))
    t_ovh  = n_kernels * tau_launch * (f_cpu_ref / f_cpu(mode)) * c_cores(mode)
             tau_launch = 15 us at f_cpu_ref = 2 GHz; c_cores = 1.2 with fewer than 4 CPU cores online, else 1
    t_step = (max(t_comp, t_mem) + t_ovh) * rho          rho = background-load factor (dynamics)

A transfer's time, and a whole round's (download + tau x t_step + upload), are answered by
:mod:`devices.completion`, the one function every caller uses.

Memory (``docs/device-model.md`` section 5): fits iff weights + trainable + activations + logits
+ runtime reserve <= RAM.

:class:`DeviceProfile` is the calibrated hardware of one device group (FedScale's ``ClientMetadata``
idea: one pure class, exact tests); :class:`ModeTable` holds the per-mode constants as arrays so the
engine can time a whole fleet at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devices.catalog import DEFAULT_EFFICIENCY_MEM, DEFAULT_RUNTIME_RESERVE_GIB, GIB, DeviceType, PowerMode
from devices.cost import PlanCost

TAU_LAUNCH_S = 15e-6
F_CPU_REF_GHZ = 2.0
FEW_CORES_PENALTY = 1.2


@dataclass(frozen=True)
class DeviceProfile:
    """A device type as calibrated by one scenario group.

    Attributes:
        dtype: catalog entry.
        modes: the power modes this group may run in (subset of the catalog's, or custom).
        precision: resolved compute precision (fp32, amp, fp16).
        efficiency: achieved fraction of the peak FLOP/s; ``None`` = catalog default per mode.
        mem_efficiency: achieved fraction of peak DRAM bandwidth.
        runtime_reserve_bytes: OS + CUDA context + framework memory.
        ram_bytes: memory of the module (unified CPU+GPU).
        speed_factor: calibration multiplier on achieved FLOP/s and bandwidth.
    """

    dtype: DeviceType
    modes: tuple[PowerMode, ...]
    precision: str
    efficiency: float | None = None
    mem_efficiency: float = DEFAULT_EFFICIENCY_MEM
    runtime_reserve_bytes: float = DEFAULT_RUNTIME_RESERVE_GIB * GIB
    ram_bytes: float | None = None
    speed_factor: float = 1.0

    def eta(self, mode: PowerMode) -> float:
        return self.efficiency if self.efficiency is not None else mode.default_efficiency(self.precision)

    def effective_flops(self, mode: PowerMode) -> float:
        """eta * P_peak * speed_factor: the FLOP/s a training step achieves in ``mode``."""
        return self.eta(mode) * mode.peak_flops(self.precision) * self.speed_factor

    def effective_mem_bw(self, mode: PowerMode) -> float:
        """eta_mem * BW(mode) * speed_factor: achieved DRAM bytes/s."""
        return self.mem_efficiency * mode.mem_bw_bytes_per_s * self.speed_factor

    def overhead_s(self, mode: PowerMode, kernels: int) -> float:
        cores = FEW_CORES_PENALTY if mode.cpu_cores_online < 4 else 1.0
        return kernels * TAU_LAUNCH_S * (F_CPU_REF_GHZ / mode.cpu_max_ghz) * cores

    def step_time_s(self, cost: PlanCost, mode: PowerMode, load: float = 1.0) -> float:
        """Seconds per local step in ``mode`` under background-load factor ``load``."""
        t_comp = cost.flops_per_step / self.effective_flops(mode)
        t_mem = cost.bytes_moved / self.effective_mem_bw(mode)
        return (max(t_comp, t_mem) + self.overhead_s(mode, cost.kernels)) * load

    @property
    def capacity_bytes(self) -> float:
        return float(self.ram_bytes if self.ram_bytes is not None else self.dtype.ram_bytes)

    def peak_memory_bytes(self, cost: PlanCost) -> float:
        return cost.memory_model_bytes + self.runtime_reserve_bytes

    def fits(self, cost: PlanCost) -> bool:
        return self.peak_memory_bytes(cost) <= self.capacity_bytes


@dataclass(frozen=True)
class ModeTable:
    """Per-(profile, mode) constants as arrays, indexed by a global mode slot.

    ``eff_flops[k]``, ``mem_bw[k]`` (achieved bytes/s) and ``ovh_per_kernel_s[k]`` let the engine
    compute ``t_step`` for every device with numpy, given each device's current slot.
    """

    eff_flops: np.ndarray
    mem_bw: np.ndarray
    ovh_per_kernel_s: np.ndarray

    @classmethod
    def build(cls, entries: list[tuple[DeviceProfile, PowerMode]]) -> "ModeTable":
        return cls(
            eff_flops=np.array([p.effective_flops(m) for p, m in entries], dtype=float),
            mem_bw=np.array([p.effective_mem_bw(m) for p, m in entries], dtype=float),
            ovh_per_kernel_s=np.array([p.overhead_s(m, 1) for p, m in entries], dtype=float),
        )

    def step_times_s(self, slots: np.ndarray, flops: np.ndarray, bytes_moved: np.ndarray,
                     kernels: np.ndarray, load: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`DeviceProfile.step_time_s` (same formula, same operation order)."""
        t_comp = flops / self.eff_flops[slots]
        t_mem = bytes_moved / self.mem_bw[slots]
        return (np.maximum(t_comp, t_mem) + kernels * self.ovh_per_kernel_s[slots]) * load

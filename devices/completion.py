"""A device's round time under a plan: download, local training and upload seconds, for many devices at once.

The one answer the simulator's clock (the engine's devices with known phase durations), the oracle's
predictor and ``fedfleet profile`` all use (the idea of FedScale's ``ClientMetadata``, whose
completion time feeds both the simulated clock and the client selector). For device d::

    t_step[d]     = (max(F[d] / P_eff[slot d], B[d] / BW_eff[slot d]) + K[d] * t_launch[slot d]) * rho[d] * s[d]
    compute_s[d]  = tau[d] * t_step[d]
    download_s[d] = L + 8 S_down[d] / 1e6 / eta / R_down[d]
    upload_s[d]   = L + 8 S_up[d] / 1e6 / eta / R_up[d]

with F the FLOPs, B the DRAM bytes and K the kernels of one step, P_eff, BW_eff and t_launch the
achieved FLOP/s, achieved bytes/s and per-kernel overhead of the device's power mode
(:class:`devices.timing.ModeTable`, a roofline plus a launch overhead), rho the background-load
factor, s a straggler spike's slowdown (1 without one), tau the local steps, S the message sizes in
bytes, R the link rates in Mbit/s (decimal), L the latency in seconds (k_rtt x RTT) and eta the
network efficiency (the share of the link rate a transfer achieves). Rates are constant for the
transfer: no contention, no bandwidth trace (the engine times those devices event by event).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devices.timing import ModeTable


@dataclass(frozen=True)
class CompletionTimes:
    """Per-device phase durations of one round (seconds)."""

    step_s: np.ndarray  # one local step
    compute_s: np.ndarray  # local_steps x step_s
    download_s: np.ndarray  # latency + payload at the downlink rate
    upload_s: np.ndarray  # latency + payload at the uplink rate

    @property
    def total_s(self) -> np.ndarray:
        """Download, then training, then upload."""
        return self.download_s + self.compute_s + self.upload_s


def transfer_s(size_bytes, rate_mbps, latency_s: float, efficiency: float):
    """Latency + payload at a constant rate: L + 8 S / 1e6 / eta / R (scalars or arrays)."""
    return latency_s + 8.0 * size_bytes / 1e6 / efficiency / rate_mbps


def completion_times(modes: ModeTable, slots: np.ndarray, flops: np.ndarray, bytes_moved: np.ndarray,
                     kernels: np.ndarray, load: np.ndarray, local_steps, bytes_down, bytes_up,
                     down_mbps: np.ndarray, up_mbps: np.ndarray, latency_s: float, efficiency: float,
                     step_factor: np.ndarray | None = None) -> CompletionTimes:
    """Phase durations of every device (module docstring); ``step_factor`` is a straggler spike's
    slowdown per device (None: no spikes). Sizes and steps may be scalars shared by all devices."""
    step = modes.step_times_s(slots, flops, bytes_moved, kernels, load)
    if step_factor is not None:
        step = step * step_factor
    return CompletionTimes(step, local_steps * step, transfer_s(bytes_down, down_mbps, latency_s, efficiency),
                           transfer_s(bytes_up, up_mbps, latency_s, efficiency))

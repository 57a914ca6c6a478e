"""Network model: per-device bandwidth processes and bandwidth traces (``docs/device-model.md`` section 6).

Each device belongs to a placement class (e.g. near/mid/far from the access point). At fleet build
its mean uplink B_bar is drawn uniformly from the class range (Mbit/s, decimal). Per round the
uplink follows a log-AR(1) process (assumed form; defaults phi = 0.7, sigma = 0.3)::

    x_t = phi * x_{t-1} + sigma * eps_t,   eps_t ~ N(0, 1),   x_0 ~ N(0, sigma^2 / (1 - phi^2))
    B_t = max(B_min, B_bar * exp(x_t))          downlink = B_t * down_up_ratio

A class may instead replay a trace (CSV ``time_s,mbps``, piecewise constant, repeated): the trace's
shape is rescaled to the device's mean (B(t) = B_bar * trace(t + offset) / mean(trace)), with a
per-device random offset, and a transfer integrates the rate over time exactly.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.errors import DeviceInputError

MAX_TRACE_ROWS = 1_000_000


@dataclass(frozen=True)
class Trace:
    """Piecewise-constant rate: ``mbps[i]`` holds on ``[times_s[i], times_s[i+1])``; the last
    segment lasts as long as the one before it; then the trace repeats."""

    times_s: np.ndarray
    mbps: np.ndarray

    @property
    def period_s(self) -> float:
        t = self.times_s
        return float(t[-1] + (t[-1] - t[-2])) if len(t) > 1 else 1.0

    @property
    def seg_end_s(self) -> np.ndarray:
        return np.append(self.times_s[1:], self.period_s)

    @property
    def mean_mbps(self) -> float:
        durations = self.seg_end_s - self.times_s
        return float(np.sum(durations * self.mbps) / self.period_s)

    def transfer_s(self, megabits: float, t0_s: float, scale: float, floor_mbps: float = 0.0,
                   ratio: float = 1.0) -> float:
        """Seconds from ``t0_s`` (trace time) until ``megabits`` have crossed at
        ``max(floor_mbps, scale * mbps(t)) * ratio`` (the same rate :meth:`BandwidthModel.rate_mbps` reports)."""
        if megabits <= 0:
            return 0.0
        rates = np.maximum(floor_mbps, scale * self.mbps) * ratio
        period = self.period_s
        ends = self.seg_end_s
        per_period = float(np.sum((ends - self.times_s) * rates))
        t = t0_s % period
        elapsed = 0.0
        remaining = megabits
        if remaining > per_period:  # skip whole periods (exact: the rate is periodic)
            n = math.floor(remaining / per_period)
            remaining -= n * per_period
            elapsed += n * period
        i = int(np.searchsorted(self.times_s, t, side="right") - 1)
        while True:
            rate = float(rates[i])
            span = float(ends[i]) - t
            if rate * span >= remaining:
                return elapsed + remaining / rate
            remaining -= rate * span
            elapsed += span
            i += 1
            if i == len(self.mbps):
                i, t = 0, 0.0
            else:
                t = float(self.times_s[i])


def load_trace(path: Path) -> Trace:
    """Read a ``time_s,mbps`` CSV; raises :class:`devices.errors.DeviceInputError` with the line at fault."""
    times, rates = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"time_s", "mbps"} <= set(reader.fieldnames):
                raise DeviceInputError(f"{path}: not a time_s,mbps CSV (the first line is not a header naming "
                                       "the columns time_s and mbps)")
            for n, row in enumerate(reader, start=2):
                if n > MAX_TRACE_ROWS:
                    raise DeviceInputError(f"{path}: more than {MAX_TRACE_ROWS} rows")
                try:
                    t, r = float(row["time_s"]), float(row["mbps"])
                except (TypeError, ValueError):
                    raise DeviceInputError(f"{path}:{n}: time_s and mbps must be numbers") from None
                if not (math.isfinite(t) and math.isfinite(r)) or r <= 0:
                    raise DeviceInputError(f"{path}:{n}: mbps must be finite and > 0, time_s finite")
                if times and t <= times[-1]:
                    raise DeviceInputError(f"{path}:{n}: time_s must increase strictly")
                times.append(t)
                rates.append(r)
    except OSError as e:
        raise DeviceInputError(f"cannot read trace {path}: {e}") from None
    if len(times) < 2 or times[0] != 0.0:
        raise DeviceInputError(f"{path}: a trace needs at least 2 rows and must start at time_s 0")
    return Trace(np.array(times), np.array(rates))


class BandwidthModel:
    """Bandwidth of every device, round by round (vectorised over the fleet).

    Args:
        mean_mbps: per-device mean uplink B_bar.
        down_up_ratio: per-device downlink/uplink ratio.
        traces: per-device trace or None (AR(1) devices).
        offsets_s: per-device trace offset.
        phi, sigma: AR(1) parameters; min_mbps: floor.
        eps: per-device standard-normal stream (``PerDeviceStream``), one draw per round.
        x0: initial AR state (standard normals scaled here to the stationary law).
    """

    def __init__(self, mean_mbps: np.ndarray, down_up_ratio: np.ndarray, traces: list[Trace | None],
                 offsets_s: np.ndarray, phi: float, sigma: float, min_mbps: float, eps, x0: np.ndarray):
        self.mean_mbps = mean_mbps
        self.down_up_ratio = down_up_ratio
        self.traces = traces
        self.offsets_s = offsets_s
        self.phi, self.sigma, self.min_mbps = phi, sigma, min_mbps
        self._eps = eps
        stationary = sigma / math.sqrt(1.0 - phi * phi) if phi < 1 else sigma
        self.x = x0 * stationary
        self.up_mbps = np.maximum(min_mbps, mean_mbps * np.exp(self.x))
        self.traced = np.array([t is not None for t in traces], dtype=bool)
        self._scale = np.array([m / t.mean_mbps if t is not None else 1.0 for m, t in zip(mean_mbps, traces)])

    def begin_round(self, round_index: int) -> None:
        """Advance the AR(1) process to ``round_index`` (round 0 uses the stationary start)."""
        eps = self._eps.draw(round_index)
        if round_index > 0:
            self.x = self.phi * self.x + self.sigma * eps
            self.up_mbps = np.maximum(self.min_mbps, self.mean_mbps * np.exp(self.x))

    def rate_mbps(self, device: int, t_s: float, direction: str) -> float:
        """Link rate of ``device`` at simulated time ``t_s`` (for traced devices it varies in time)."""
        ratio = 1.0 if direction == "up" else float(self.down_up_ratio[device])
        tr = self.traces[device]
        if tr is None:
            return float(self.up_mbps[device]) * ratio
        tt = (t_s + self.offsets_s[device]) % tr.period_s
        i = int(np.searchsorted(tr.times_s, tt, side="right") - 1)
        return max(self.min_mbps, float(self._scale[device] * tr.mbps[i])) * ratio

    def data_time_s(self, device: int, size_bytes: float, t0_s: float, direction: str, eta_net: float) -> float:
        """Seconds for the payload alone (no latency), starting at ``t0_s``, without contention."""
        megabits = 8.0 * size_bytes / 1e6 / eta_net
        tr = self.traces[device]
        if tr is None:  # same operation order as the engine's vectorised fast path
            return megabits / self.rate_mbps(device, t0_s, direction)
        ratio = 1.0 if direction == "up" else float(self.down_up_ratio[device])
        return tr.transfer_s(megabits, t0_s + float(self.offsets_s[device]), float(self._scale[device]),
                             self.min_mbps, ratio)

    def state(self) -> dict:
        return {"x": self.x.copy(), "up": self.up_mbps.copy(), "eps": self._eps.state()}

    def set_state(self, st: dict) -> None:
        self.x, self.up_mbps = np.array(st["x"]), np.array(st["up"])
        self._eps.set_state(st["eps"])

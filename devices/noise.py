"""How much of the round-time variance is fresh per-round noise that no policy can learn.

For a fleet and one fixed plan, y[i, r] = log t[i, r], with t the round time of device i in round r
(download + tau x step + upload, :func:`devices.completion.completion_times`, at the device's power
mode, background load and link rate of that round). Split each round's state into what it carries
over from the round before and what is drawn fresh:

* persistent: the device's identity (type, precision, placement class, mean link rate), the power
  mode it holds, the AR(1) state of its background load (``ar1``) and of its log link rate;
* fresh: an i.i.d. load draw (``lognormal``), the innovations of the AR(1) processes, and a mode
  switch (which mode, and for ``markov`` / ``periodic`` / ``dwell`` that it happens at all).

The **state predictor** yhat[i, r] is log t[i, r] computed at the state round r-1 hands over, every
process moved to its conditional mean in log space: the mode held in round r-1, log load
E[log rho_r | x_{r-1}] (mu + sigma phi x_{r-1} for ``ar1``, mu for ``lognormal``), log link rate
log Bbar_i + phi_B x_{r-1}. The **noise fraction** is the share of the variance of y over devices x
rounds that this predictor leaves unexplained:

    noise_fraction = sum_{i, r>=1} (y[i, r] - yhat[i, r])^2 / sum_{i, r>=1} (y[i, r] - ybar)^2,

0 when nothing changes between rounds (every difference between devices is persistent), near 1 when
round times are fresh draws around a common mean. It is the share that even a policy knowing every
device's state could not foresee (up to the plug-in's small bias: log t at the mean state is not
exactly the mean of log t), so no online policy, which must estimate that state, does better.

:func:`one_lag_split` is what a policy that sees only round times faces: 1 - R^2 of the pooled
first-order autoregression yhat = m_i + b (y[i, r-1] - m_i), m_i the device's mean. One noisy
observation predicts worse than the state, so this fraction is the larger of the two.

Each dynamic's contribution, for a share c of log round time that it moves (first order):

* i.i.d. lognormal load (sigma): fresh every round, all noise: about c^2 sigma^2.
* AR(1) load (sigma, phi): stationary variance c^2 sigma^2, of which the innovation share
  1 - phi^2 is noise.
* log-AR(1) link rate (innovation std sigma_log, phi): stationary variance sigma_log^2 / (1 - phi^2)
  on the transfer share, of which sigma_log^2 is noise.
* power modes: with per-round switch probability s (markov: 1 - stay_prob; dwell: about 1 / mean
  dwell; periodic: all devices redraw every N rounds) the jump variance times s is noise.
* device identity: persistent, never noise.

Bandwidth traces, contention, faults and dropouts are not part of it (a device's rate is its
round's AR(1) rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from devices.completion import completion_times
from devices.timing import ModeTable


def noise_fraction(y: np.ndarray, yhat: np.ndarray) -> float:
    """sum (y - yhat)^2 / sum (y - mean y)^2 over the given entries (0 when y does not vary)."""
    total = float(((y - y.mean()) ** 2).sum())
    return float(((y - yhat) ** 2).sum()) / total if total > 0 else 0.0


@dataclass(frozen=True)
class OneLag:
    """The pooled one-lag autoregression of :func:`one_lag_split`."""

    noise_fraction: float
    slope: float  # b


def one_lag_split(y: np.ndarray) -> OneLag:
    """1 - R^2 of yhat[i, r] = m_i + b (y[i, r-1] - m_i) over rounds r >= 1 (``y``: devices x rounds,
    b by least squares over all devices)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"y must be devices x rounds with >= 2 rounds, got shape {y.shape}")
    m = y.mean(axis=1, keepdims=True)
    prev, cur = y[:, :-1] - m, y[:, 1:] - m
    denom = float((prev * prev).sum())
    b = float((prev * cur).sum()) / denom if denom > 0 else 0.0
    return OneLag(noise_fraction(y[:, 1:], m + b * prev), b)


class _Fleet(Protocol):
    """What :func:`log_round_times` reads of a fleet (``sim.fleet.FleetModel`` has it)."""

    n: int
    mode_table: ModeTable
    load: Any  # devices.dynamics.BackgroundLoad
    bandwidth: Any  # devices.network.BandwidthModel

    def begin_round(self, r: int) -> None: ...

    def slots(self, devices: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FixedPlanCost:
    """The work of the one plan every device runs: per-device arrays of ``devices.cost.PlanCost``'s
    fields at each device's precision (which changes a step's work), and the shared local steps."""

    flops_per_step: np.ndarray
    bytes_moved: np.ndarray
    kernels: np.ndarray
    bytes_down: np.ndarray
    bytes_up: np.ndarray
    local_steps: int

    def log_total_s(self, modes: ModeTable, slots: np.ndarray, load: np.ndarray, up_mbps: np.ndarray,
                    down_up_ratio: np.ndarray, latency_s: float, efficiency: float) -> np.ndarray:
        """log(download + tau x step + upload) of every device in the given state."""
        t = completion_times(modes, slots, self.flops_per_step, self.bytes_moved, self.kernels, load,
                             self.local_steps, self.bytes_down, self.bytes_up, up_mbps * down_up_ratio, up_mbps,
                             latency_s, efficiency)
        return np.log(t.total_s)


@dataclass(frozen=True)
class RoundTimes:
    """y (log round times) and yhat (the state predictor; column 0 is NaN), devices x rounds."""

    y: np.ndarray
    yhat: np.ndarray

    @property
    def noise_fraction(self) -> float:
        """The module docstring's noise fraction, over rounds 1.. ."""
        return noise_fraction(self.y[:, 1:], self.yhat[:, 1:])


def log_round_times(fleet: _Fleet, cost: FixedPlanCost, rounds: int, latency_s: float,
                    efficiency: float) -> RoundTimes:
    """y and yhat for every device and rounds 0..rounds-1, advancing ``fleet``'s own dynamics.

    The fleet's processes draw from their own named streams, so y is the trajectory a run of the
    same scenario and seed sees (without contention, traces, faults or dropouts).
    """
    d, bw = np.arange(fleet.n), fleet.bandwidth
    y, yhat = np.empty((fleet.n, rounds)), np.full((fleet.n, rounds), np.nan)
    for r in range(rounds):
        if r > 0:  # the state round r-1 hands over, each process at its conditional mean
            up_hat = np.maximum(bw.min_mbps, bw.mean_mbps * np.exp(bw.phi * bw.x))
            yhat[:, r] = cost.log_total_s(fleet.mode_table, fleet.slots(d), fleet.load.predicted_factor(), up_hat,
                                          bw.down_up_ratio, latency_s, efficiency)
        fleet.begin_round(r)
        y[:, r] = cost.log_total_s(fleet.mode_table, fleet.slots(d), fleet.load.factor, bw.up_mbps,
                                   bw.down_up_ratio, latency_s, efficiency)
    return RoundTimes(y, yhat)

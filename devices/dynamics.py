"""Time-varying device state, as named seeded processes (``docs/device-model.md`` section 7).

Every process draws from its own per-device stream (``devices.rng.PerDeviceStream``) once per round
for every device, so one device's trajectory never depends on other devices or on selection.

* Power modes: ``fixed`` (the initial mode all run long); ``periodic`` (every N rounds a new mode
  drawn uniformly from the device's allowed set, the way USTC's Jetson testbeds emulate varying
  capability); ``markov`` (each round stay with probability q, else move uniformly to one of the
  other allowed modes); ``dwell`` (a device keeps its mode for a dwell time D drawn from a
  distribution, :class:`Dwell`, then moves uniformly to one of the other allowed modes and draws a
  new D; geometric D is the Markov chain with stay probability 1 - 1/mean, ``uniform`` and ``fixed``
  D give a semi-Markov chain whose switches are more regular). Switches happen only at round
  boundaries; an optional outage (reboot) delays the device's start after a switch.
* Background load: multiplicative slowdown rho per device per round. ``lognormal``: a fresh
  rho ~ LogNormal(mu, sigma) every round (assumed; FedScale also draws device speeds log-normally,
  https://github.com/SymbioticLab/FedScale). ``ar1``: persistent load, log rho follows a stationary
  Gaussian AR(1) with the same marginal LogNormal(mu, sigma) and lag-one correlation phi.
* Dropout: per round, the device fails with probability p_d (a constant, or p_d ~ Beta(a, b)
  drawn once per device); it fails at a uniformly random fraction of its planned round.
* Availability: ``always``; ``periodic`` (on for ``on_fraction`` of every ``period_s``, with a
  random phase per device, like the charging windows of the FLASH trace that FedScale uses,
  arXiv 2006.06983); ``trace`` (explicit on-intervals).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from devices.errors import DeviceInputError, excerpt
from devices.rng import PerDeviceStream


class Dwell:
    """Dwell times, in rounds (integers >= 1), drawn by inverting a uniform u in [0, 1).

    ``geometric`` with mean m: P(D = k) = p (1 - p)^(k-1), p = 1/m, so a device leaves its mode with
    probability p every round (the Markov chain); D = max(1, ceil(log(1 - u) / log(1 - p))).
    ``uniform``: D uniform on the integers low..high. ``fixed``: D = round(mean).

    A fleet that has run for a long time is seen at a random point of each device's dwell, so the
    first dwell is the renewal process's stationary residual R, P(R = k) = P(D >= k) / E[D]
    (Cox, *Renewal Theory*, 1962, ch. 5): for the geometric law R has the law of D (no memory);
    for ``fixed`` R is uniform on 1..D, so devices do not all switch in the same round.
    """

    def __init__(self, kind: str, mean: float = 20.0, low: int = 10, high: int = 30):
        self.kind, self.mean, self.low, self.high = kind, float(mean), int(low), int(high)

    def _support(self) -> tuple[np.ndarray, np.ndarray]:
        """Support 1..K and the pmf of D for the bounded kinds (``uniform``, ``fixed``)."""
        if self.kind == "fixed":
            k = max(1, int(round(self.mean)))
            pmf = np.zeros(k)
            pmf[-1] = 1.0
        else:
            pmf = np.zeros(self.high)
            pmf[self.low - 1:] = 1.0 / (self.high - self.low + 1)
        return np.arange(1, len(pmf) + 1), pmf

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Dwell times D for uniforms ``u`` (one per device)."""
        if self.kind == "geometric":
            p = 1.0 / self.mean
            if p >= 1.0:
                return np.ones(len(u), dtype=np.int64)
            return np.maximum(1, np.ceil(np.log1p(-u) / math.log1p(-p))).astype(np.int64)
        k, pmf = self._support()
        return k[np.minimum(np.searchsorted(np.cumsum(pmf), u, side="right"), len(k) - 1)]

    def draw_residual(self, u: np.ndarray) -> np.ndarray:
        """Stationary residual dwell times R for uniforms ``u`` (the first dwell of every device)."""
        if self.kind == "geometric":
            return self.draw(u)
        k, pmf = self._support()
        tail = pmf[::-1].cumsum()[::-1]  # P(D >= k)
        cdf = np.cumsum(tail / tail.sum())
        return k[np.minimum(np.searchsorted(cdf, u, side="right"), len(k) - 1)]

    @property
    def mean_rounds(self) -> float:
        """E[D] in rounds."""
        if self.kind == "geometric":
            return max(1.0, self.mean)
        k, pmf = self._support()
        return float((k * pmf).sum())


class PowerModeProcess:
    """Current power-mode index (into each device's allowed list) for every device.

    ``stream`` gives the uniform that picks the next mode; ``dwell_stream`` (kind ``dwell`` only)
    the uniform that draws a dwell time, so the other kinds' draws are untouched by dwell times.
    """

    def __init__(self, kind: str, allowed_counts: np.ndarray, initial: np.ndarray, every_rounds: int,
                 stay_prob: float, stream: PerDeviceStream, dwell: Dwell | None = None,
                 dwell_stream: PerDeviceStream | None = None):
        self.kind, self.every, self.stay = kind, every_rounds, stay_prob
        self.counts = allowed_counts.astype(np.int64)
        self.current = initial.astype(np.int64)
        self.switched = np.zeros(len(initial), dtype=bool)
        self._u = stream
        self.dwell, self._dwell_u = dwell, dwell_stream
        self.left = np.zeros(len(initial), dtype=np.int64)  # dwell: rounds left in the current mode

    def begin_round(self, r: int) -> None:
        u = self._u.draw(r)
        prev = self.current
        if self.kind == "dwell":
            self._dwell_round(r, u)
        elif r == 0 or self.kind == "fixed":
            self.switched = np.zeros(len(prev), dtype=bool)
            return
        elif self.kind == "periodic":
            if r % self.every == 0:
                self.current = np.minimum((u * self.counts).astype(np.int64), self.counts - 1)
        else:  # markov: stay with prob q, else uniform over the others
            self.current = np.where((u >= self.stay) & (self.counts > 1),
                                    self._other_mode(prev, (u - self.stay) / max(1e-300, 1.0 - self.stay)), prev)
        self.switched = self.current != prev

    def _other_mode(self, prev: np.ndarray, v: np.ndarray) -> np.ndarray:
        """A mode other than ``prev``, uniform over the others for a uniform ``v`` in [0, 1)."""
        k = np.minimum((v * (self.counts - 1)).astype(np.int64), np.maximum(self.counts - 2, 0))
        return np.where(k >= prev, k + 1, k)  # skip the current mode

    def _dwell_round(self, r: int, u: np.ndarray) -> None:
        """Round 0: every device starts a stationary residual dwell; later: a dwell that ends switches."""
        v = self._dwell_u.draw(r)
        if r == 0:
            self.left = self.dwell.draw_residual(v)
            return
        self.left = self.left - 1
        ends = self.left <= 0
        self.current = np.where(ends & (self.counts > 1), self._other_mode(self.current, u), self.current)
        self.left = np.where(ends, self.dwell.draw(v), self.left)

    def state(self) -> dict:
        st = {"current": self.current.copy(), "switched": self.switched.copy(), "u": self._u.state()}
        if self.kind == "dwell":
            st["left"], st["dwell_u"] = self.left.copy(), self._dwell_u.state()
        return st

    def set_state(self, st: dict) -> None:
        self.current, self.switched = np.array(st["current"]), np.array(st["switched"])
        self._u.set_state(st["u"])
        if self.kind == "dwell":
            self.left = np.array(st["left"])
            self._dwell_u.set_state(st["dwell_u"])


class BackgroundLoad:
    """Multiplicative compute slowdown rho_d for every device; ``none`` gives 1.

    ``lognormal`` (fresh every round): log rho_t = mu + sigma z_t, z_t ~ N(0, 1) i.i.d.
    ``ar1`` (persistent): log rho_t = mu + sigma x_t with the unit-variance Gaussian AR(1)
    x_t = phi x_{t-1} + sqrt(1 - phi^2) z_t, x_0 = z_0, so log rho_t ~ N(mu, sigma^2) in every
    round (sigma is the same spread as ``lognormal``'s), corr(log rho_t, log rho_{t-k}) = phi^k,
    and the innovation std of log rho is sigma sqrt(1 - phi^2). phi = 0 gives ``lognormal`` exactly.
    """

    def __init__(self, kind: str, mu: float, sigma: float, stream: PerDeviceStream, n: int, phi: float = 0.0):
        self.kind, self.mu, self.sigma, self._z, self.n, self.phi = kind, mu, sigma, stream, n, phi
        self.x = np.zeros(n)  # ar1: the standardised log-load state
        self.factor = np.ones(n)

    def begin_round(self, r: int) -> None:
        z = self._z.draw(r)
        if self.kind == "ar1":
            self.x = z.copy() if r == 0 else self.phi * self.x + math.sqrt(1.0 - self.phi * self.phi) * z
            self.factor = np.exp(self.mu + self.sigma * self.x)
        else:
            self.factor = np.exp(self.mu + self.sigma * z) if self.kind == "lognormal" else np.ones(self.n)

    def predicted_factor(self) -> np.ndarray:
        """exp(E[log rho_{t+1} | state now]): exp(mu + sigma phi x_t) for ar1, exp(mu) for lognormal, 1 for none."""
        if self.kind == "ar1":
            return np.exp(self.mu + self.sigma * self.phi * self.x)
        return np.full(self.n, math.exp(self.mu) if self.kind == "lognormal" else 1.0)

    def state(self) -> dict:
        st = {"factor": self.factor.copy(), "z": self._z.state()}
        if self.kind == "ar1":
            st["x"] = self.x.copy()
        return st

    def set_state(self, st: dict) -> None:
        self.factor = np.array(st["factor"])
        self._z.set_state(st["z"])
        if self.kind == "ar1":
            self.x = np.array(st["x"])


class Dropout:
    """Per-round failure flag and the fraction of the planned round at which it strikes."""

    def __init__(self, prob: np.ndarray, flag_stream: PerDeviceStream, phase_stream: PerDeviceStream):
        self.prob = prob
        self._flag, self._phase = flag_stream, phase_stream
        self.drops = np.zeros(len(prob), dtype=bool)
        self.fraction = np.zeros(len(prob))

    def begin_round(self, r: int) -> None:
        self.drops = self._flag.draw(r) < self.prob
        self.fraction = self._phase.draw(r).copy()

    def state(self) -> dict:
        return {"flag": self._flag.state(), "phase": self._phase.state(), "drops": self.drops.copy(),
                "fraction": self.fraction.copy()}

    def set_state(self, st: dict) -> None:
        self._flag.set_state(st["flag"])
        self._phase.set_state(st["phase"])
        self.drops, self.fraction = np.array(st["drops"]), np.array(st["fraction"])


class Availability:
    """When each device is on.

    ``periodic``: device d is on during [k P + phi_d, k P + phi_d + f P) for integer k.
    ``trace``: device d is on inside its listed [start, end) intervals (sorted, disjoint).
    """

    def __init__(self, kind: str, n: int, period_s: float = 1.0, on_fraction: float = 1.0,
                 phase_s: np.ndarray | None = None, intervals: list[np.ndarray] | None = None):
        self.kind, self.n = kind, n
        self.period, self.on = period_s, on_fraction
        self.phase = phase_s if phase_s is not None else np.zeros(n)
        self.intervals = intervals

    def window_at(self, d: int, t: float) -> tuple[float, float] | None:
        """The on-window containing ``t`` as (start, end), or None if the device is off at ``t``."""
        if self.kind == "always":
            return (-np.inf, np.inf)
        if self.kind == "periodic":
            if self.on >= 1.0:
                return (-np.inf, np.inf)
            k = np.floor((t - self.phase[d]) / self.period)
            start = k * self.period + self.phase[d]
            end = start + self.on * self.period
            return (float(start), float(end)) if start <= t < end else None
        iv = self.intervals[d]
        if len(iv) == 0:
            return None
        i = int(np.searchsorted(iv[:, 0], t, side="right") - 1)
        if i >= 0 and iv[i, 0] <= t < iv[i, 1]:
            return (float(iv[i, 0]), float(iv[i, 1]))
        return None

    def available_mask(self, t: float) -> np.ndarray:
        """Which devices are on at time ``t`` (vectorised for ``always`` and ``periodic``)."""
        if self.kind == "always" or (self.kind == "periodic" and self.on >= 1.0):
            return np.ones(self.n, dtype=bool)
        if self.kind == "periodic":
            pos = np.mod(t - self.phase, self.period)
            return pos < self.on * self.period
        return np.array([self.window_at(d, t) is not None for d in range(self.n)], dtype=bool)

    def window_end(self, d: int, t: float) -> float:
        w = self.window_at(d, t)
        return w[1] if w is not None else t


def read_availability(path: Path, ids: list[str], labels: list[str]) -> list[np.ndarray]:
    """On-intervals per device from a CSV ``device,start_s,end_s`` (an ``Availability("trace")`` input).

    ``device`` is a device id, a group label (every device of the group) or ``*`` (all devices); each
    device's intervals come back sorted with overlapping ones merged, as an (k, 2) array of
    [start_s, end_s). Raises :class:`DeviceInputError` naming the line at fault.
    """
    per: list[list[tuple[float, float]]] = [[] for _ in ids]
    index = {d: i for i, d in enumerate(ids)}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"device", "start_s", "end_s"} <= set(reader.fieldnames):
                raise DeviceInputError(f"{path} needs header device,start_s,end_s")
            for n, row in enumerate(reader, start=2):
                s, e = _interval(row, f"{path}:{n}")
                for i in _targets(row["device"], index, labels, f"{path}:{n}"):
                    per[i].append((s, e))
    except OSError as e:
        raise DeviceInputError(f"cannot read {path}: {e}") from None
    return [_merged(iv) for iv in per]


def _interval(row: dict, where: str) -> tuple[float, float]:
    """``(start_s, end_s)`` of one availability row: finite numbers with start_s < end_s."""
    try:
        s, e = float(row["start_s"]), float(row["end_s"])
    except (TypeError, ValueError):
        raise DeviceInputError(f"{where}: start_s/end_s must be numbers") from None
    if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
        raise DeviceInputError(f"{where}: need finite start_s < end_s")
    return s, e


def _targets(key: str, index: dict[str, int], labels: list[str], where: str) -> list[int]:
    """Device indices one availability row names: ``*``, a device id (``index``: id -> position), or a group label."""
    if key == "*":
        return list(range(len(labels)))
    if key in index:
        return [index[key]]
    targets = [i for i, lab in enumerate(labels) if lab == key]
    if not targets:
        raise DeviceInputError(f"{where}: unknown device or group {excerpt(key)}")
    return targets


def _merged(intervals: list[tuple[float, float]]) -> np.ndarray:
    """Sorted intervals with overlapping or touching ones joined, as a (k, 2) array."""
    merged: list[list[float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return np.array(merged, dtype=float).reshape(-1, 2)

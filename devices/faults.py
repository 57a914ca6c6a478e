"""Faults injected into the simulated fleet (scenario key ``faults``), beyond the ordinary dynamics.

Each fault is a per-device process with its own named streams (``fault.*``), drawn for every device
every round whether or not the device is selected, so a device's faults never depend on the others
(same discipline as ``devices.dynamics``). All probabilities are per device per round.

* **crash** (``crash_prob``): the device crashes during the round, at a random phase: with ``u`` the
  round's uniform draw of ``fault.crash_phase``, phase ``k = floor(3 u)`` (0 download, 1 training,
  2 upload) at the fraction ``3 u - k`` of that phase's planned duration. It is back next round.
  Status ``crashed``.
* **lost upload** (``lost_upload_prob``): the upload completes (its bytes are sent and counted) but
  the report never reaches the server, which learns of it at the upload's end (the transport's
  connection reset). Status ``lost``; never credited.
* **partitions** (``partitions``): simulated-time intervals ``[start_s, end_s)`` during which a
  placement class cannot reach the server. A transfer that would start inside one, or is still
  running when one starts, fails at that moment (training itself continues through a partition).
  Status ``partitioned``.
* **straggler spikes** (``straggler``): with probability ``prob`` a device that is not straggling
  starts a spike lasting ``rounds`` rounds, during which its step time is multiplied by ``factor``
  (its speed divided by it). Recorded per device-round as ``straggler_factor``.
* **leaving** (``leave_prob``): the device leaves the fleet for good. If it was selected, it leaves
  at a uniformly random fraction (``fault.leave_phase``) of its planned round (status ``left``);
  either way it is never available again.

The engine turns these into failure times and statuses (``sim.engine``); ``verify()`` checks that
no failed device is credited.
"""

from __future__ import annotations

import math

import numpy as np

from devices.rng import PerDeviceStream

N_PHASES = 3  # download, training, upload


class Faults:
    """Per-round fault draws for a fleet of ``n`` devices (see the module docstring)."""

    def __init__(self, spec, seed: int, n: int, placement: np.ndarray, placement_names: list[str]):
        self.spec = spec
        self.n = n
        self.placement = placement
        self.crash_prob, self.lost_prob, self.leave_prob = spec.crash_prob, spec.lost_upload_prob, spec.leave_prob
        st = spec.straggler
        self.straggle_prob, self.straggle_factor, self.straggle_rounds = st.prob, st.factor, st.rounds

        def stream(name: str, prob: float) -> PerDeviceStream | None:
            return PerDeviceStream(seed, name, n) if prob > 0 else None

        self._crash, self._crash_phase = stream("fault.crash", self.crash_prob), stream("fault.crash_phase", self.crash_prob)
        self._lost = stream("fault.lost_upload", self.lost_prob)
        self._leave, self._leave_phase = stream("fault.leave", self.leave_prob), stream("fault.leave_phase", self.leave_prob)
        self._straggle = stream("fault.straggler", self.straggle_prob)
        # partitions per placement class: sorted (start, end) arrays
        index = {name: i for i, name in enumerate(placement_names)}
        per: list[list[tuple[float, float]]] = [[] for _ in placement_names]
        for p in spec.partitions:
            per[index[p.placement]].append((p.start_s, p.end_s))
        self._parts = [np.array(sorted(iv), dtype=float).reshape(-1, 2) for iv in per]
        self.class_partitioned = np.array([len(iv) > 0 for iv in self._parts], dtype=bool)  # per placement class
        self.crashes = np.zeros(n, dtype=bool)
        self.crash_phase = np.zeros(n, dtype=np.int64)
        self.crash_fraction = np.zeros(n)
        self.lost = np.zeros(n, dtype=bool)
        self.leaving = np.zeros(n, dtype=bool)
        self.leave_fraction = np.zeros(n)
        self.gone = np.zeros(n, dtype=bool)  # left in an earlier round
        self.straggle_left = np.zeros(n, dtype=np.int64)
        self.step_factor = np.ones(n)

    def begin_round(self, r: int) -> None:
        """Draw this round's faults for every device (fixed order of streams)."""
        self.gone |= self.leaving  # who left last round is gone now
        if self._crash is not None:
            self.crashes = self._crash.draw(r) < self.crash_prob
            u = N_PHASES * self._crash_phase.draw(r)
            self.crash_phase = np.minimum(np.floor(u).astype(np.int64), N_PHASES - 1)
            self.crash_fraction = u - self.crash_phase
        if self._lost is not None:
            self.lost = self._lost.draw(r) < self.lost_prob
        if self._leave is not None:
            self.leaving = (self._leave.draw(r) < self.leave_prob) & ~self.gone
            self.leave_fraction = self._leave_phase.draw(r).copy()
        if self._straggle is not None:
            draw = self._straggle.draw(r)
            self.straggle_left = np.maximum(self.straggle_left - 1, 0)
            start = (self.straggle_left == 0) & (draw < self.straggle_prob)
            self.straggle_left[start] = self.straggle_rounds
            self.step_factor = np.where(self.straggle_left > 0, self.straggle_factor, 1.0)

    def _streams(self) -> dict:
        """The fault streams by name (None where the fault is off)."""
        return {"crash": self._crash, "crash_phase": self._crash_phase, "lost": self._lost, "leave": self._leave,
                "leave_phase": self._leave_phase, "straggle": self._straggle}

    def state(self) -> dict:
        """This round's draws, the departed devices, the spikes under way and every stream (checkpoints)."""
        return {"streams": {k: s.state() for k, s in self._streams().items() if s is not None},
                "crashes": self.crashes.copy(), "crash_phase": self.crash_phase.copy(),
                "crash_fraction": self.crash_fraction.copy(), "lost": self.lost.copy(), "leaving": self.leaving.copy(),
                "leave_fraction": self.leave_fraction.copy(), "gone": self.gone.copy(),
                "straggle_left": self.straggle_left.copy(), "step_factor": self.step_factor.copy()}

    def set_state(self, st: dict) -> None:
        """Restore :meth:`state` onto faults built from the same scenario."""
        for k, s in self._streams().items():
            if s is not None:
                s.set_state(st["streams"][k])
        self.crashes, self.crash_phase = np.array(st["crashes"]), np.array(st["crash_phase"])
        self.crash_fraction, self.lost = np.array(st["crash_fraction"]), np.array(st["lost"])
        self.leaving, self.leave_fraction = np.array(st["leaving"]), np.array(st["leave_fraction"])
        self.gone, self.straggle_left = np.array(st["gone"]), np.array(st["straggle_left"])
        self.step_factor = np.array(st["step_factor"])

    def alive(self) -> np.ndarray:
        """Devices that have not left the fleet (a device leaving this round is still alive until it leaves)."""
        return ~self.gone

    def partition_start(self, placement: int, t: float) -> float:
        """The first moment at or after ``t`` at which ``placement`` is partitioned (``t`` itself if it
        is partitioned at ``t``; ``inf`` if never)."""
        iv = self._parts[placement]
        if not len(iv):
            return math.inf
        live = iv[iv[:, 1] > t]
        if not len(live):
            return math.inf
        return float(max(live[0, 0], t))

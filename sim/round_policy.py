"""Round policies: which devices a round selects, when it is cut, and what a device still running then is.

* ``all``: select ``ceil(participation x available)`` devices (at least one) and wait for every one
  to report or fail.
* ``deadline``: select as ``all``; cut the round a fixed ``deadline_s`` after its start, or
  ``deadline_factor`` x the previous round's censored median device time (the first round, with no
  median yet, waits for every device). Devices still running at the cut are ``late``.
* ``first_k``: select ``ceil(k x over_selection)`` devices (all available ones if fewer) and cut the
  round once ``k`` of them reported; the ones still running are ``cancelled`` (over-selection as in
  Bonawitz et al., "Towards federated learning at scale: system design", MLSys 2019).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from sim.records import STATUS_CODE, RoundBuffer
from sim.scenario import RoundSpec

OK, OOM, LATE, CANCELLED = (STATUS_CODE[s] for s in ("ok", "oom", "late", "cancelled"))


class RoundPolicy(ABC):
    """How a round selects its devices and when it ends."""

    @abstractmethod
    def n_selected(self, n_available: int) -> int:
        """How many of ``n_available`` available devices the round selects."""

    @abstractmethod
    def deadline_s(self) -> float:
        """Seconds after the round start at which the round is cut; NaN: no deadline."""

    @property
    @abstractmethod
    def reports_needed(self) -> int | None:
        """Reports that end the round before every device is done; None: wait for all."""

    @property
    @abstractmethod
    def cut_status(self) -> int:
        """Status code of a device still running when the round is cut."""

    def select(self, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The selected devices (sorted): all candidates, or a uniform sample of :meth:`n_selected`."""
        n = self.n_selected(len(candidates))
        if n >= len(candidates):
            return candidates
        return np.sort(rng.choice(candidates, size=n, replace=False))

    def observe(self, buf: RoundBuffer, deadline_s: float) -> None:  # noqa: B027 - most policies keep no state
        """Learn from a round that ended (the deadline policy's median)."""

    def state(self) -> dict:
        """What a resumed run needs (checkpoints)."""
        return {}

    def set_state(self, st: dict) -> None:  # noqa: B027 - stateless by default
        """Restore :meth:`state`."""


class WaitForAll(RoundPolicy):
    """``all``: every selected device reports or fails."""

    def __init__(self, participation: float):
        self.participation = participation

    def n_selected(self, n_available: int) -> int:
        """``ceil(participation x n_available)``, at least one."""
        return max(1, math.ceil(self.participation * n_available))

    def deadline_s(self) -> float:
        """No deadline."""
        return math.nan

    @property
    def reports_needed(self) -> int | None:
        """Every device."""
        return None

    @property
    def cut_status(self) -> int:
        """Never used: no device runs past the end of such a round."""
        return CANCELLED


class Deadline(WaitForAll):
    """``deadline``: a fixed deadline, or a factor of the previous round's censored median device time."""

    def __init__(self, participation: float, fixed_s: float | None, factor: float | None):
        super().__init__(participation)
        self.fixed_s, self.factor = fixed_s, factor
        self._last_median = math.nan

    def deadline_s(self) -> float:
        """``deadline_s``, else ``deadline_factor`` x the last median (NaN in the first round)."""
        return self.fixed_s if self.fixed_s is not None else self.factor * self._last_median

    @property
    def cut_status(self) -> int:
        """``late``."""
        return LATE

    def observe(self, buf: RoundBuffer, deadline_s: float) -> None:
        """Keep the round's censored median device time for the next deadline."""
        self._last_median = censored_median(buf, deadline_s)

    def state(self) -> dict:
        """The last median."""
        return {"last_median": self._last_median}

    def set_state(self, st: dict) -> None:
        """Restore the last median."""
        self._last_median = float(st["last_median"])


class FirstK(RoundPolicy):
    """``first_k``: over-select, end the round at the k-th report."""

    def __init__(self, k: int, over_selection: float):
        self.k, self.over_selection = k, over_selection

    def n_selected(self, n_available: int) -> int:
        """``ceil(k x over_selection)``, at most every available device."""
        return min(n_available, math.ceil(self.k * self.over_selection))

    def deadline_s(self) -> float:
        """No deadline."""
        return math.nan

    @property
    def reports_needed(self) -> int | None:
        """k."""
        return self.k

    @property
    def cut_status(self) -> int:
        """``cancelled``."""
        return CANCELLED


def round_policy(spec: RoundSpec) -> RoundPolicy:
    """The policy a scenario's ``round`` section names."""
    if spec.policy == "first_k":
        return FirstK(spec.k, spec.over_selection)
    if spec.policy == "deadline":
        return Deadline(spec.participation, spec.deadline_s, spec.deadline_factor)
    return WaitForAll(spec.participation)


def censored_median(buf: RoundBuffer, deadline_s: float) -> float:
    """Median device time of a round: reporting devices (ok, oom) count with their time, late ones
    as +inf (censored at the deadline; failures are left out). If half or more were late the median
    is unknown and the deadline itself is returned, so the next deadline is the last one x factor
    and can never collapse below what most devices need."""
    st = buf.status
    times = np.concatenate([buf.t_report_s[(st == OK) | (st == OOM)] - buf.t_start_s,
                            np.full(int((st == LATE).sum()), np.inf)])
    if len(times) == 0:
        return deadline_s if math.isfinite(deadline_s) else math.nan
    med = float(np.median(times))
    return med if math.isfinite(med) else deadline_s

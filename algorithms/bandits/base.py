"""The discrete bandit interface and the helpers its policies share.

A :class:`Bandit` chooses one of ``n_arms`` arms per round (``select``), optionally restricted to
a boolean feasibility mask, and learns from the reward of the arm played (``update``). Rewards are
assumed in [0, 1]; non-finite rewards raise ``ValueError``. All randomness comes from the
``np.random.Generator`` given at construction, so a seed fixes the whole sequence, and
``state()`` / ``set_state()`` round-trip everything (statistics, ``t`` and the generator) through
JSON.

:class:`IndexBandit` holds the rule shared by the index policies (UCB1, D-UCB, SW-UCB): feasible
untried arms are played first, uniformly at random; otherwise the feasible arm with the largest
index, ties broken uniformly at random.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np


def check_real(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf, *,
               lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` and the allowed interval."""
    interval = (f"{'(' if lo_open or math.isinf(lo) else '['}{lo:g}, "
                f"{hi:g}{')' if hi_open or math.isinf(hi) else ']'}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or x < lo or x > hi \
            or (lo_open and x == lo) or (hi_open and x == hi):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return x


def check_int(name: str, value: Any, lo: int) -> int:
    """``value`` as an int >= ``lo``, or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_reward(reward: Any) -> float:
    r = float(reward)
    if not math.isfinite(r):
        raise ValueError(f"reward must be finite, got {reward!r}")
    return r


def jsonable(obj: Any) -> Any:
    """Numpy arrays/scalars inside dicts and lists turned into plain Python values."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    return obj


class Bandit(ABC):
    """A policy over ``n_arms`` discrete arms; ``t`` counts the updates so far.

    Subclasses list their numpy statistics in ``_arrays`` (saved by ``state``) and their
    constructor parameters in ``_params``.
    """

    name: ClassVar[str]
    _arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_arms: int, rng: np.random.Generator) -> None:
        self.n_arms = check_int("n_arms", n_arms, 1)
        self.rng = check_rng(rng)
        self.t = 0

    @abstractmethod
    def select(self, feasible: np.ndarray | None = None) -> int:
        """An arm to play; only arms with ``feasible[a]`` True (all when None)."""

    @abstractmethod
    def update(self, arm: int, reward: float) -> None:
        """Learn the reward of ``arm`` (the arm played last, normally)."""

    @abstractmethod
    def indices(self) -> np.ndarray:
        """The current index per arm (see each policy)."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The constructor parameters (keyword arguments of ``make_bandit``)."""

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-serialisable Python values."""
        st = {"name": self.name, "n_arms": self.n_arms, "t": self.t, "params": self._params(),
              "rng": self.rng.bit_generator.state}
        st.update({k: getattr(self, k) for k in self._arrays})
        return jsonable(st)

    def set_state(self, st: dict[str, Any]) -> None:
        """Resume from ``state()`` output; the bandit must have the same name, arms and params."""
        mine = {"name": self.name, "n_arms": self.n_arms, "params": jsonable(self._params())}
        theirs = {k: st.get(k) for k in mine}
        if json.loads(json.dumps(mine)) != json.loads(json.dumps(theirs)):
            raise ValueError(f"state is for {theirs}, not for this bandit {mine}")
        for k in self._arrays:
            old = getattr(self, k)
            setattr(self, k, np.array(st[k], dtype=old.dtype).reshape(old.shape))
        self.t = int(st["t"])
        self.rng.bit_generator.state = st["rng"]

    # -- helpers for subclasses -------------------------------------------------------------------

    def _mask(self, feasible: np.ndarray | None) -> np.ndarray:
        if feasible is None:
            return np.ones(self.n_arms, dtype=bool)
        mask = np.asarray(feasible)
        if mask.dtype != np.bool_ or mask.shape != (self.n_arms,):
            raise ValueError(f"feasible must be a boolean mask of shape ({self.n_arms},), "
                             f"got dtype {mask.dtype} and shape {mask.shape}")
        if not mask.any():
            raise ValueError("feasible excludes every arm")
        return mask

    def _pick(self, candidates: np.ndarray) -> int:
        """Uniformly random index among the True entries of ``candidates``."""
        return int(self.rng.choice(np.flatnonzero(candidates)))

    def _argmax(self, values: np.ndarray, mask: np.ndarray) -> int:
        """Argmax of ``values`` over ``mask``, ties broken uniformly at random."""
        v = np.where(mask, values, -np.inf)
        return self._pick(mask & (v == v[mask].max()))

    def _record(self, arm: int, reward: float) -> tuple[int, float]:
        """Validate an update and count it in ``t``."""
        if isinstance(arm, bool) or not isinstance(arm, (int, np.integer)) \
                or not 0 <= arm < self.n_arms:
            raise ValueError(f"arm must be an integer in [0, {self.n_arms}), got {arm!r}")
        r = check_reward(reward)
        self.t += 1
        return int(arm), r


class IndexBandit(Bandit):
    """Untried feasible arms first (uniformly at random), then the largest index (random ties)."""

    @abstractmethod
    def _untried(self) -> np.ndarray:
        """Boolean per arm: the arm has no statistic yet and must be played first."""

    def select(self, feasible: np.ndarray | None = None) -> int:
        mask = self._mask(feasible)
        untried = mask & self._untried()
        if untried.any():
            return self._pick(untried)
        return self._argmax(self.indices(), mask)

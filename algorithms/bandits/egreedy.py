"""ε-greedy (Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed. 2018, §2.2–2.4).
With probability ε_t explore uniformly over the feasible arms, else play the feasible arm with the
largest sample mean (untried arms have mean +inf, so they are tried first; ties at random):

    ε_t = ε                              (decay = "none")
    ε_t = min(1, ε K / (t + 1))          (decay = "inverse_t")
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from algorithms.bandits.base import Bandit, check_real

DECAYS = ("none", "inverse_t")


class EpsilonGreedy(Bandit):
    name = "egreedy"
    _arrays = ("counts", "sums")

    def __init__(self, n_arms: int, rng: np.random.Generator, *, epsilon: float = 0.1,
                 decay: Literal["none", "inverse_t"] = "none") -> None:
        super().__init__(n_arms, rng)
        self.epsilon = check_real("epsilon", epsilon, 0.0, 1.0)
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        self.decay = decay
        self.counts = np.zeros(self.n_arms, dtype=np.int64)
        self.sums = np.zeros(self.n_arms)

    def _params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "decay": self.decay}

    def current_epsilon(self) -> float:
        if self.decay == "inverse_t":
            return min(1.0, self.epsilon * self.n_arms / (self.t + 1))
        return self.epsilon

    def indices(self) -> np.ndarray:
        """The sample means (+inf for untried arms)."""
        n = np.maximum(self.counts, 1)
        return np.where(self.counts > 0, self.sums / n, np.inf)

    def select(self, feasible: np.ndarray | None = None) -> int:
        mask = self._mask(feasible)
        if self.rng.random() < self.current_epsilon():
            return self._pick(mask)
        return self._argmax(self.indices(), mask)

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        self.counts[arm] += 1
        self.sums[arm] += r

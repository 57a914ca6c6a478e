"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit
problem", Machine Learning 47), with an exploration scale c (c = 1 is the paper's policy):

    index_a = mean_a + c * sqrt(2 ln t / n_a)

where t is the total number of plays so far and n_a the plays of arm a (untried arms: +inf,
played first).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from algorithms.bandits.base import IndexBandit, check_real


class UCB1(IndexBandit):
    name = "ucb1"
    _arrays = ("counts", "sums")

    def __init__(self, n_arms: int, rng: np.random.Generator, *, exploration: float = 1.0) -> None:
        super().__init__(n_arms, rng)
        self.exploration = check_real("exploration", exploration, 0.0)
        self.counts = np.zeros(self.n_arms, dtype=np.int64)
        self.sums = np.zeros(self.n_arms)

    def _params(self) -> dict[str, Any]:
        return {"exploration": self.exploration}

    def _untried(self) -> np.ndarray:
        return self.counts == 0

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        self.counts[arm] += 1
        self.sums[arm] += r

    def indices(self) -> np.ndarray:
        n = np.maximum(self.counts, 1)
        bonus = self.exploration * np.sqrt(2.0 * math.log(max(self.t, 1)) / n)
        return np.where(self.counts > 0, self.sums / n + bonus, np.inf)

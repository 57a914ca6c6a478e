"""Gaussian Thompson sampling (Agrawal & Goyal 2013, "Further optimal regret bounds for Thompson
sampling", AISTATS 2013). Per arm, with n_a plays and reward sum sum_a:

    μ̂_a = sum_a / (n_a + 1),   θ_a ~ N(μ̂_a, σ² / (n_a + 1))

and the feasible arm with the largest sample θ_a is played (the paper's σ = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms.bandits.base import Bandit, check_real


class GaussianThompson(Bandit):
    name = "thompson"
    _arrays = ("counts", "sums")

    def __init__(self, n_arms: int, rng: np.random.Generator, *, sigma: float = 1.0) -> None:
        super().__init__(n_arms, rng)
        self.sigma = check_real("sigma", sigma, 0.0, lo_open=True)
        self.counts = np.zeros(self.n_arms, dtype=np.int64)
        self.sums = np.zeros(self.n_arms)

    def _params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def indices(self) -> np.ndarray:
        """The posterior means μ̂_a."""
        return self.sums / (self.counts + 1)

    def select(self, feasible: np.ndarray | None = None) -> int:
        mask = self._mask(feasible)
        theta = self.rng.normal(self.indices(), self.sigma / np.sqrt(self.counts + 1))
        return self._argmax(theta, mask)

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        self.counts[arm] += 1
        self.sums[arm] += r

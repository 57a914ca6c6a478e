"""EXP3 (Auer, Cesa-Bianchi, Freund & Schapire 2002, "The nonstochastic multiarmed bandit
problem", SIAM J. Computing 32). Over the K_f feasible arms (probability 0 for the others):

    p_a = (1 − γ) w_a / Σ_{feasible b} w_b + γ / K_f

An arm is sampled from p. On update with reward r, using the probability p_a the arm had at its
last selection (the current all-feasible probability if it was never selected):

    x̂ = r / p_a,   log w_a += γ x̂ / K

Weights are kept as logs, shifted so that the largest is 0 (numerical stability).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms.bandits.base import Bandit, check_real


class EXP3(Bandit):
    name = "exp3"
    _arrays = ("log_w", "last_p")

    def __init__(self, n_arms: int, rng: np.random.Generator, *, gamma: float = 0.1) -> None:
        super().__init__(n_arms, rng)
        self.gamma = check_real("gamma", gamma, 0.0, 1.0, lo_open=True)
        self.log_w = np.zeros(self.n_arms)
        self.last_p = np.zeros(self.n_arms)   # 0 = never selected

    def _params(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def probabilities(self, feasible: np.ndarray | None = None) -> np.ndarray:
        """p over all arms: 0 for infeasible arms, summing to 1 over the feasible ones."""
        mask = self._mask(feasible)
        log_w = np.where(mask, self.log_w, -np.inf)
        w = np.exp(log_w - log_w.max())
        return (1.0 - self.gamma) * w / w.sum() + np.where(mask, self.gamma / mask.sum(), 0.0)

    def indices(self) -> np.ndarray:
        return self.probabilities()

    def select(self, feasible: np.ndarray | None = None) -> int:
        p = self.probabilities(feasible)
        arm = int(self.rng.choice(self.n_arms, p=p))
        self.last_p[arm] = p[arm]
        return arm

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        p = self.last_p[arm] if self.last_p[arm] > 0 else self.probabilities()[arm]
        self.log_w[arm] += self.gamma * (r / p) / self.n_arms
        self.log_w -= self.log_w.max()

"""Discounted UCB, D-UCB (Garivier & Moulines 2011, "On upper-confidence bound policies for
switching bandit problems", ALT 2011). With discount λ in (0, 1] and the arm a_s played at step s:

    N_λ(a) = Σ_s λ^{t−s} 1{a_s = a},   S_λ(a) = Σ_s λ^{t−s} r_s 1{a_s = a},   n_λ = Σ_a N_λ(a)

    index_a = S_λ(a) / N_λ(a) + 2 B sqrt(ξ ln(max(n_λ, 1)) / N_λ(a))      (the paper's c_t(γ, i))

Computed online: on each update every N and S is multiplied by λ, then the played arm gets
N += 1, S += r. An arm is untried (played first) only if it was never played; a played arm whose
N_λ has underflowed to 0 gets index +inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from algorithms.bandits.base import IndexBandit, check_real


class DUCB(IndexBandit):
    name = "ducb"
    _arrays = ("plays", "n_disc", "s_disc")

    def __init__(self, n_arms: int, rng: np.random.Generator, *, discount: float = 0.95,
                 xi: float = 0.6, bound: float = 1.0) -> None:
        super().__init__(n_arms, rng)
        self.discount = check_real("discount", discount, 0.0, 1.0, lo_open=True)
        self.xi = check_real("xi", xi, 0.0, lo_open=True)
        self.bound = check_real("bound", bound, 0.0, lo_open=True)
        self.plays = np.zeros(self.n_arms, dtype=np.int64)
        self.n_disc = np.zeros(self.n_arms)   # N_λ
        self.s_disc = np.zeros(self.n_arms)   # S_λ

    def _params(self) -> dict[str, Any]:
        return {"discount": self.discount, "xi": self.xi, "bound": self.bound}

    def _untried(self) -> np.ndarray:
        return self.plays == 0

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        self.n_disc *= self.discount
        self.s_disc *= self.discount
        self.n_disc[arm] += 1.0
        self.s_disc[arm] += r
        self.plays[arm] += 1

    def indices(self) -> np.ndarray:
        n = self.n_disc
        log_n = math.log(max(float(n.sum()), 1.0))
        safe = np.where(n > 0, n, 1.0)
        idx = self.s_disc / safe + 2.0 * self.bound * np.sqrt(self.xi * log_n / safe)
        return np.where(n > 0, idx, np.inf)

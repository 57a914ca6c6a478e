"""Sliding-window UCB, SW-UCB (Garivier & Moulines 2011, "On upper-confidence bound policies for
switching bandit problems", ALT 2011). Statistics over the last W plays only:

    N_W(a) = #{plays of a among the last W},   mean_W(a) = their mean reward

    index_a = mean_W(a) + B sqrt(ξ ln(min(t, W)) / N_W(a))

with t the total number of plays. Arms with N_W(a) = 0 (including arms that left the window) are
untried and played first.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from algorithms.bandits.base import IndexBandit, check_int, check_real


class SWUCB(IndexBandit):
    name = "swucb"

    def __init__(self, n_arms: int, rng: np.random.Generator, *, window: int = 50,
                 xi: float = 0.6, bound: float = 1.0) -> None:
        super().__init__(n_arms, rng)
        self.window = check_int("window", window, 1)
        self.xi = check_real("xi", xi, 0.0, lo_open=True)
        self.bound = check_real("bound", bound, 0.0, lo_open=True)
        self.history: deque[tuple[int, float]] = deque(maxlen=self.window)

    def _params(self) -> dict[str, Any]:
        return {"window": self.window, "xi": self.xi, "bound": self.bound}

    def window_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(N_W, S_W) per arm over the last W plays."""
        arms = np.fromiter((a for a, _ in self.history), dtype=np.int64, count=len(self.history))
        rewards = np.fromiter((r for _, r in self.history), dtype=float, count=len(self.history))
        return (np.bincount(arms, minlength=self.n_arms).astype(float),
                np.bincount(arms, weights=rewards, minlength=self.n_arms))

    def _untried(self) -> np.ndarray:
        return self.window_stats()[0] == 0

    def update(self, arm: int, reward: float) -> None:
        arm, r = self._record(arm, reward)
        self.history.append((arm, r))

    def indices(self) -> np.ndarray:
        n, s = self.window_stats()
        log_t = math.log(max(min(self.t, self.window), 1))
        safe = np.where(n > 0, n, 1.0)
        return np.where(n > 0, s / safe + self.bound * np.sqrt(self.xi * log_t / safe), np.inf)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "history": [[a, r] for a, r in self.history]}

    def set_state(self, st: dict[str, Any]) -> None:
        super().set_state(st)
        self.history = deque(((int(a), float(r)) for a, r in st["history"]), maxlen=self.window)

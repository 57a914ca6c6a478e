"""Multi-armed bandits in pure numpy: discrete policies behind one interface (:class:`Bandit`,
built by name with :func:`make_bandit`) and the continuum-armed S-UCB (:class:`SUCB`).

Discrete: ``ucb1`` (UCB1), ``ducb`` (discounted UCB), ``swucb`` (sliding-window UCB), ``exp3``,
``thompson`` (Gaussian Thompson sampling), ``egreedy`` (ε-greedy). Each module's docstring gives
its index formula and source. All randomness comes from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from algorithms.bandits.base import Bandit, IndexBandit
from algorithms.bandits.ducb import DUCB
from algorithms.bandits.egreedy import EpsilonGreedy
from algorithms.bandits.exp3 import EXP3
from algorithms.bandits.sucb import SUCB, Cell, Dim
from algorithms.bandits.swucb import SWUCB
from algorithms.bandits.thompson import GaussianThompson
from algorithms.bandits.ucb1 import UCB1

_CLASSES: dict[str, type[Bandit]] = {c.name: c for c in (UCB1, DUCB, SWUCB, EXP3, GaussianThompson,
                                                         EpsilonGreedy)}
BANDITS: tuple[str, ...] = tuple(_CLASSES)
"""Names accepted by :func:`make_bandit`."""


def make_bandit(name: str, n_arms: int, rng: np.random.Generator, **params: Any) -> Bandit:
    """The discrete bandit ``name`` over ``n_arms`` arms, with its keyword parameters."""
    if name not in _CLASSES:
        raise ValueError(f"unknown bandit {name!r}; allowed: {', '.join(BANDITS)}")
    cls = _CLASSES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_arms", "rng")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for bandit {name!r}; "
                         f"allowed: {', '.join(allowed)}")
    return cls(n_arms, rng, **params)


__all__ = ["BANDITS", "DUCB", "EXP3", "SUCB", "SWUCB", "UCB1", "Bandit", "Cell", "Dim",
           "EpsilonGreedy", "GaussianThompson", "IndexBandit", "make_bandit"]

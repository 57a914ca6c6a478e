"""The Learner interface the engine calls; ``learning.kind: none`` uses :class:`NullLearner`.

The real learner (``learning/``, its own issue) trains the proxy model in host time inside
``local_update``; simulated time never depends on it (DESIGN.md, "two clocks").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from devices.plan import Plan


@dataclass(frozen=True)
class Update:
    """What one local update returns to the engine."""

    loss_before: float = float("nan")
    loss_after: float = float("nan")
    lora_update_norm: float = float("nan")
    payload: object = None
    extra: dict = field(default_factory=dict)  # per device-round columns (proxy memory, sparsity, ...)


class Learner(Protocol):
    def local_update(self, device: int, plan: Plan, round_index: int) -> Update: ...

    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None: ...

    def evaluate(self, round_index: int) -> dict: ...


class NullLearner:
    """Timing only: no training, no accuracy."""

    trains = False

    def local_update(self, device: int, plan: Plan, round_index: int) -> Update:
        return Update()

    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None:
        return None

    def evaluate(self, round_index: int) -> dict:
        return {}

"""The Learner interface the engine calls; ``learning.kind: none`` uses :class:`NullLearner`.

The real learner (``learning/``, its own issue) trains the proxy model in host time inside
``local_update``; simulated time never depends on it (DESIGN.md, "two clocks").

A device's update in round r depends only on the learner's state at the start of round r (state
changes only in ``aggregate``, at the round's end), never on the order devices train in. So a learner
may compute a round's updates elsewhere and in parallel (``learning.workers``,
:class:`learning.parallel.ParallelLearner`) by offering two optional methods:

* ``submit(device, plan, round_index) -> handle``: called instead of ``local_update`` when the
  device's download ends; starts (or queues) the update and returns an opaque handle;
* ``collect(handles) -> list[Update]``: called once per round right after the cut-off, before
  ``aggregate`` and before the records are built, with the handles of every update submitted in the
  round (devices cut off or dropped after their download included), in slot order; returns their
  updates in the same order.

A learner that holds resources (processes) may offer ``close()``; ``sim.runner.simulate`` calls it
when the run ends, also on error, for the learners it builds.
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

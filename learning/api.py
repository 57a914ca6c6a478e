"""The contract between the simulation engine and a learner (no torch here).

A learner trains the proxy model in host time; simulated time never depends on it. The engine
(``sim.engine``), the runner (``sim.runner``) and the checkpoint (``sim.checkpoint``) use only the
members of :class:`Learner`. ``learning.kind: none`` runs with :class:`NullLearner` (timing only); the
real learner is :class:`learning.learner.RealLearner`, and :class:`learning.parallel.ParallelLearner`
computes its local updates on Ray actors.

Lifecycle of one run: the engine calls :meth:`Learner.use_resize` once with the strategy's resize
method; in every round, when a device's download ends, :meth:`Learner.submit` (which by default
computes :meth:`Learner.local_update` at once); right after the round's cut-off
:meth:`Learner.collect` with the handles of every update submitted in the round (devices cut off or
failed after their download included), in slot order; then :meth:`Learner.aggregate` with the
updates of the devices that reported and, on evaluation rounds, :meth:`Learner.evaluate`. At a round
boundary :meth:`Learner.state` captures everything a resumed run needs; the runner calls
:meth:`Learner.close` when the run ends, also on error.

Why updates may be computed elsewhere and in any order: a device's update in round r depends only on
the learner's state at the start of round r (which changes only in ``aggregate``, at the round's
end) and on random streams named by (device, round), never on the order devices train in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devices.plan import Plan


@dataclass(frozen=True)
class Update:
    """What one local update returns to the engine."""

    loss_before: float = float("nan")
    loss_after: float = float("nan")
    lora_update_norm: float = float("nan")
    payload: object = None
    extra: dict = field(default_factory=dict)  # per device-round columns (proxy memory, sparsity, ...)


class Learner(ABC):
    """Everything the engine, the runner and the checkpoint ask of a learner."""

    # ------------------------------------------------------------------ lifecycle
    @property
    @abstractmethod
    def trains(self) -> bool:
        """True when the learner trains a real model (losses, updates, accuracy); False for timing only."""

    @abstractmethod
    def use_resize(self, method: str) -> None:
        """Take the strategy's resize method (``svd`` or ``truncate``), used under ``learning.resize: auto``."""

    # ------------------------------------------------------------------ training
    @abstractmethod
    def local_update(self, device: int, plan: Plan, round_index: int) -> Update:
        """Carry out ``plan`` on ``device``'s data in round ``round_index``; commits nothing."""

    on_trained: Callable[[], None] | None = None
    """Called once per finished local update, in host time (the runner's progress inside a round)."""

    def trained(self) -> None:
        """One local update has finished: tell :attr:`on_trained`, if set."""
        if self.on_trained is not None:
            self.on_trained()

    def submit(self, device: int, plan: Plan, round_index: int) -> Any:
        """Start the device's update when its download ends; returns a handle for :meth:`collect`."""
        update = self.local_update(device, plan, round_index)
        self.trained()
        return update

    def collect(self, handles: list[Any]) -> list[Update]:
        """The updates of ``handles`` (from :meth:`submit`, this round), in the same order."""
        return list(handles)

    @abstractmethod
    def data_sizes(self) -> np.ndarray:
        """Local training examples |D_i| of every device (aggregation weights ``data_size``)."""

    @abstractmethod
    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None:
        """Fold the reported updates into the global model and commit those devices' states."""

    # ------------------------------------------------------------------ outputs
    @abstractmethod
    def evaluate(self, round_index: int) -> dict:
        """Evaluate the fleet's models: ``accuracy``, ``accuracy_min``, ``accuracy_max``, ``loss`` (may be empty)."""

    @property
    @abstractmethod
    def extra_columns(self) -> tuple[str, ...]:
        """Names of the per device-round columns that updates fill in :attr:`Update.extra`."""

    @abstractmethod
    def evaluation_rows(self) -> list[dict]:
        """Every per-device evaluation so far: round, device_index, accuracy, loss, attn_sparsity, ffn_sparsity."""

    @abstractmethod
    def partition_table(self):
        """The data partition as a pandas DataFrame: device_index, n_samples, label histogram."""

    @abstractmethod
    def info(self) -> dict:
        """What the run's summary records about the learner (model, dataset, split digests, ...)."""

    @abstractmethod
    def host_summary(self) -> dict:
        """Host-time counters for the summary's host section (setup, training and evaluation seconds, tokens)."""

    # ------------------------------------------------------------------ state
    @abstractmethod
    def state(self) -> dict:
        """Everything a resumed run needs at a round boundary, as plain data (dicts, lists, numbers, arrays)."""

    @abstractmethod
    def set_state(self, state: dict) -> None:
        """Restore what :meth:`state` captured onto a learner built from the same scenario."""

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:  # noqa: B027 - holding no resources is the common case
        """Release what the learner holds (processes, threads); its outputs stay readable."""


class NullLearner(Learner):
    """Timing only: no data, no training, no accuracy."""

    @property
    def trains(self) -> bool:
        """Never: a timing-only run trains nothing."""
        return False

    def use_resize(self, method: str) -> None:
        """Nothing to resize without a model."""

    def local_update(self, device: int, plan: Plan, round_index: int) -> Update:
        """An update without losses or payload."""
        return Update()

    def data_sizes(self) -> np.ndarray:
        """A timing-only run holds no data, so it has no data sizes."""
        raise RuntimeError("a timing-only run (learning.kind: none) has no local data sizes")

    def aggregate(self, devices: list[int], updates: list[Update], method: str, weights: list[float]) -> None:
        """Nothing to aggregate."""

    def evaluate(self, round_index: int) -> dict:
        """No model, no accuracy."""
        return {}

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """No learner columns."""
        return ()

    def evaluation_rows(self) -> list[dict]:
        """No evaluations."""
        return []

    def partition_table(self):
        """No data partition: an empty table."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame({"device_index": np.zeros(0, dtype=np.int64), "n_samples": np.zeros(0, dtype=np.int64)})

    def info(self) -> dict:
        """Nothing to record."""
        return {}

    def host_summary(self) -> dict:
        """No host work."""
        return {}

    def state(self) -> dict:
        """No state."""
        return {}

    def set_state(self, state: dict) -> None:
        """Nothing to restore; a non-empty state came from a learner that trains."""
        if state:
            raise ValueError("a state of a real learner cannot be restored onto a timing-only learner")

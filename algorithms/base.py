"""The Strategy interface and the types that cross it (plans out, reports in).

A strategy sees only what a real server sees (:class:`FleetView`): device ids, each device's
current sparsity (the server holds the masks it was sent) and past reports (durations, bytes,
losses, failures). Device types and profiles are *not* in the view; a strategy that needs them
(an oracle) declares ``prior_free = False`` and receives them separately.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from algorithms.sparsity import SparsityRule
from devices.plan import Plan, top_layers

Aggregator = Literal["svd", "zero_pad", "fedavg"]
"""svd: reconstruct each device's ΔW, masked weighted average, refactor per device (FlexLoRA, the
FedSpine default); zero_pad: HetLoRA zero padding to the largest rank, norm weights; fedavg: plain
averaging of equal-rank factors."""
Weighting = Literal["data_size", "samples", "uniform"]
"""Aggregation weights: local data size |D_i|, samples seen this round (batch x steps), or equal."""

REWARD_COLUMNS = ("reward", "reward_loss", "reward_progress", "reward_importance", "reward_time")
"""Per device-round columns a bandit strategy fills from :meth:`Strategy.observe` (NaN otherwise)."""

STATUSES = ("ok", "oom", "dropped", "late", "cancelled", "crashed", "lost", "partitioned", "left")
"""ok: reported in time; oom: plan did not fit memory (reported the failure); dropped: device
failed mid-round (nothing sent); late: still running at the deadline; cancelled: not needed once
the first k reports arrived. Injected faults (scenario key ``faults``, devices/faults.py): crashed:
crashed mid-round; lost: uploaded, but the report never arrived; partitioned: its placement class
could not reach the server; left: left the fleet for good during the round."""


@dataclass(frozen=True)
class Report:
    """What the server learns from one device in one round."""

    device: int
    round: int
    plan: Plan
    status: str
    t_start_s: float
    t_report_s: float  # NaN without a report
    duration_s: float  # t_report - t_start (NaN without a report)
    compute_s: float  # local training time the device measured (NaN if it did not train)
    bytes_up: int
    bytes_down: int
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    lora_update_norm: float = float("nan")


@dataclass
class RoundReports:
    """A round's reports, column-wise (cheap for 10,000-device fleets)."""

    round: int
    devices: np.ndarray
    plans: list[Plan]
    status: np.ndarray  # of str
    t_start_s: float
    t_report_s: np.ndarray
    compute_s: np.ndarray
    bytes_up: np.ndarray
    bytes_down: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    lora_update_norm: np.ndarray
    t_end_s: float = float("nan")  # round end
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # learner columns (e.g. lora_rank_reported)

    @property
    def duration_s(self) -> np.ndarray:
        return self.t_report_s - self.t_start_s

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Report]:
        for i in range(len(self.devices)):
            yield Report(
                device=int(self.devices[i]), round=self.round, plan=self.plans[i], status=str(self.status[i]),
                t_start_s=self.t_start_s, t_report_s=float(self.t_report_s[i]),
                duration_s=float(self.t_report_s[i] - self.t_start_s), compute_s=float(self.compute_s[i]),
                bytes_up=int(self.bytes_up[i]), bytes_down=int(self.bytes_down[i]),
                loss_before=float(self.loss_before[i]), loss_after=float(self.loss_after[i]),
                lora_update_norm=float(self.lora_update_norm[i]),
            )


@dataclass
class FleetView:
    """What the server knows when it plans a round."""

    round: int
    device_ids: Sequence[str]
    prune_ratio: np.ndarray  # current (cumulative) sparsity of every device
    last: RoundReports | None = None


class Oracle(ABC):
    """What a strategy that is not prior-free (``prior_free = False``: the oracle) may read beyond a
    real server's view. The engine implements it (:class:`sim.engine.FleetOracle`)."""

    profiles: Sequence[Any]  # per device group: devices.timing.DeviceProfile
    device_types: Sequence[str]  # per device: catalog type id

    @abstractmethod
    def predict_round_s(self, devices: np.ndarray, plan: Plan) -> np.ndarray:
        """Expected round time (s) of ``plan`` on each of ``devices`` from the fleet's current state;
        +inf where the plan does not fit the device's memory."""


@dataclass
class StrategyContext:
    """Run constants a strategy may use (no device profiles here)."""

    n_devices: int
    rounds: int
    local_steps: int
    batch_size: int
    num_layers: int
    rng: np.random.Generator
    learning: bool = False  # a real learner trains (losses and LoRA updates are in the reports)
    oracle: Oracle | None = field(default=None, repr=False)  # only for prior_free = False strategies
    sparsity: SparsityRule = field(default_factory=SparsityRule)  # the scenario's ``sparsity`` section
    step_flops: Callable[[Plan], float] | None = field(default=None, repr=False)
    """FLOPs of one local step under a plan (forward + backward): the model's cost, the same on every
    device, so a prior-free strategy may use it (None when the run gives none)."""


def declared(params: BaseModel, name: str, default: Any = None) -> Any:
    """The value of parameter ``name`` if the strategy's ``Params`` schema declares it, else ``default``.

    Some parameters are optional across strategies (``lora_depth``, ``ranks``, ``aggregator``,
    ``weighting``, ``local_steps``, ``batch_size``, ``rank_prune_decay``): a strategy opts in by
    declaring the field. This reads the schema (pydantic ``model_fields``), not arbitrary attributes."""
    return params.model_dump(include={name})[name] if name in type(params).model_fields else default


class Strategy(ABC):
    """Plans every selected device's round and learns from the reports."""

    name: ClassVar[str]
    prior_free: ClassVar[bool] = True
    aggregator: ClassVar[str] = "fedavg"
    resize: ClassVar[str] = "svd"
    """How a device turns the global update into its rank (``learning.resize: auto``): svd or truncate."""
    split: ClassVar[bool] = False
    """True for split-learning strategies: every plan carries ``split_layers`` and the engine runs the
    round as a split round (``sim/split_round.py``)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def check_params(cls, params: BaseModel, num_layers: int, learning: bool = False) -> list[tuple[str, str]]:
        """Checks that need the target model or the learner: (param key, message) for each problem.
        ``learning`` is True when the scenario trains a real model (``learning.kind: real``)."""
        out = []
        depth = declared(params, "lora_depth")
        if depth is not None and depth > num_layers:
            out.append(("lora_depth", f"{depth} exceeds the target model's {num_layers} layers"))
        ranks = declared(params, "ranks")
        if declared(params, "aggregator") == "fedavg" and ranks is not None and len(set(ranks)) > 1:
            out.append(("aggregator", f"'fedavg' needs one rank for all devices, got ranks {ranks}; "
                                      "use 'svd' or 'zero_pad'"))
        return out

    weighting: ClassVar[str] = "data_size"

    def __init__(self, params: BaseModel, ctx: StrategyContext):
        self.params = params
        self.ctx = ctx
        # a strategy may let the scenario choose the aggregation (params.aggregator / params.weighting)
        self.aggregator = declared(params, "aggregator", type(self).aggregator)
        self.weighting = declared(params, "weighting", type(self).weighting)

    def plan_shape(self) -> tuple[tuple[int, ...] | None, int, int]:
        """(LoRA layers, local steps, batch size): the params' ``lora_depth`` / ``local_steps`` /
        ``batch_size`` where a strategy has and sets them, else all layers and the run's values."""
        p = self.params
        depth = declared(p, "lora_depth")
        layers = None if depth is None else top_layers(depth, self.ctx.num_layers)
        return (layers, declared(p, "local_steps") or self.ctx.local_steps,
                declared(p, "batch_size") or self.ctx.batch_size)

    @abstractmethod
    def plan(self, round_index: int, view: FleetView, selected: np.ndarray) -> list[Plan]:
        """One plan per selected device (same order). Plans must never lower a device's sparsity."""

    def observe(self, round_index: int, reports: RoundReports) -> dict[str, np.ndarray] | None:  # noqa: B027
        """Learn from the round's reports (bandits update here). May return per-device columns named
        in :data:`REWARD_COLUMNS`, aligned with ``reports.devices``, for ``device_rounds``."""
        return None

    def state(self) -> dict:
        """Everything needed to resume the strategy (checkpoints)."""
        return {"rng": self.ctx.rng.bit_generator.state}

    def set_state(self, st: dict) -> None:
        self.ctx.rng.bit_generator.state = st["rng"]

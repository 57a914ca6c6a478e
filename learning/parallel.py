"""Parallel local updates within one run (``learning.workers`` > 1): Ray actors, results identical to serial.

A device's local update in round r depends only on the learner's state at the start of round r
(the global LoRA ``glob``, the global ``head``, the resize method, the largest device rank for
``truncate`` resizing, and the device's own :class:`~learning.learner.DeviceState`) and on named RNG
streams per (device, round); the state changes only in ``aggregate``, at the round's end
(:mod:`learning.api`). So a round's updates can run anywhere, in any order, and be collected at the
cut-off.

:class:`ParallelLearner` is the authoritative :class:`~learning.learner.RealLearner` in this process
(aggregation, evaluation, data sizes, the partition and evaluation tables, the counters) plus
``workers`` Ray actors (``num_cpus=1`` each; a local Ray with ``workers`` CPUs is started unless Ray
is already initialised). Every actor builds its own replica from the same config, seed and fleet size
(construction is deterministic: same split, partition, tokens and proxy weights). It overrides the
contract's ``submit``/``collect`` (:class:`~learning.api.Learner`):

* :meth:`ParallelLearner.submit` when a device's download ends. The first submit of a round ships
  the round-start state once (``ray.put`` of glob, head, resize method, largest rank) to every
  actor; each task carries the device's ``DeviceState``. Tasks queue here and go to whichever actor
  is idle (one task in flight per actor), so uneven plans keep all actors busy.
* :meth:`ParallelLearner.collect` at the round's cut-off: waits for the round's updates, adds their
  host counters (``host_train_s`` summed over actors, ``host_steps``, token counts) to this
  learner's, and copies back the global factors that ``truncate`` resizing computed lazily on an
  actor (``GlobalEntry.B/A``, cached for later rounds exactly as a serial run caches them).

Torch threads: every actor, and this process until :meth:`close`, use ``learning.torch_threads``,
default 1 (torch's float reductions depend on the thread count, so a run is bit-identical to
``workers: 1`` at the same ``torch_threads``). :meth:`close` kills the actors, shuts down the Ray it
started and restores this process's thread count; the runner calls it when the run
ends, also on error.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import torch

from devices.plan import Plan
from learning.api import Update
from learning.config import LearnerConfig
from learning.learner import RealLearner

log = logging.getLogger(__name__)

class ReplicaLearner(RealLearner):
    """An actor's copy of the learner: round-start state set from the server, ``_max_rank`` shipped too
    (it reads every device's rank, which a replica does not track)."""

    max_rank: int = 8

    def _max_rank(self) -> int:
        return self.max_rank


class UpdateWorker:
    """The Ray actor: one replica, one task at a time (wrapped by ``ray.remote`` in :class:`ParallelLearner`)."""

    def __init__(self, config: LearnerConfig, threads: int, kwargs: dict):
        torch.set_num_threads(threads)
        self.learner = ReplicaLearner(config, **kwargs)
        self.unfactored: set = set()

    def ready(self) -> bool:
        return True

    def begin_round(self, state: dict) -> None:
        lr = self.learner
        lr.glob, lr.head, lr.default_resize, lr.max_rank = (state["glob"], state["head"], state["default_resize"],
                                                            state["max_rank"])
        self.unfactored = {k for k, g in lr.glob.items() if g.B is None}

    def update(self, device: int, plan: Plan, round_index: int, device_state) -> tuple[Update, dict, dict]:
        """The device's update, the counter deltas, and the global factors computed for the first time."""
        lr = self.learner
        lr.devices[device] = device_state
        before = lr.counters()
        upd = lr.local_update(device, plan, round_index)
        deltas = {c: v - before[c] for c, v in lr.counters().items()}
        fills = {k: (lr.glob[k].B, lr.glob[k].A) for k in self.unfactored if lr.glob[k].B is not None}
        self.unfactored -= fills.keys()
        return upd, deltas, fills


class ParallelLearner(RealLearner):
    """:class:`RealLearner` whose local updates run on ``config.workers`` Ray actors (module docstring)."""

    def __init__(self, config: LearnerConfig, *, seed: int, n_devices: int, lora_targets: list[str], target_layers: int,
                 base_dir=None):
        try:
            import ray  # noqa: PLC0415
        except ImportError as e:  # pragma: no cover - ray is a base requirement
            raise RuntimeError("learning.workers > 1 needs the ray package (pip install ray)") from e
        t0 = time.perf_counter()
        self._ray = ray
        self._actors: list = []
        self._owned = False
        self.workers = config.workers
        self.threads = config.torch_threads or 1
        self._round: int | None = None
        self._next = 0
        self._queue: deque = deque()  # (handle, args) not yet sent
        self._idle: deque = deque()
        self._running: dict = {}  # ObjectRef -> (actor index, handle)
        self._done: dict[int, Update] = {}
        self._threads_before = torch.get_num_threads()
        kwargs = {"seed": seed, "n_devices": n_devices, "lora_targets": list(lora_targets),
                  "target_layers": target_layers, "base_dir": base_dir}
        try:
            if not ray.is_initialized():
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                self._owned = True
            actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(UpdateWorker)
            self._actors = [actor.remote(config, self.threads, kwargs) for _ in range(self.workers)]
            torch.set_num_threads(self.threads)
            super().__init__(config, **kwargs)  # meanwhile the actors build their replicas
            ray.get([a.ready.remote() for a in self._actors])
        except BaseException:
            self.close()
            raise
        self._idle.extend(range(self.workers))
        self.setup_s = time.perf_counter() - t0

    # ------------------------------------------------------------------ engine side
    def submit(self, device: int, plan: Plan, round_index: int) -> int:
        """Queue the device's update for round ``round_index``; returns its handle."""
        if round_index != self._round:
            self._begin_round(round_index)
        h = self._next
        self._next += 1
        self._queue.append((h, (device, plan, round_index, self.devices[device])))
        self._dispatch()
        return h

    def collect(self, handles: list[int]) -> list[Update]:
        """The updates of ``handles`` (in that order), once computed; folds their counters into this learner."""
        ray = self._ray
        want = set(handles)
        while not want <= self._done.keys():
            if not self._running:
                raise RuntimeError(f"collect: unknown handles {sorted(want - self._done.keys())}")
            ready, _ = ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                i, h = self._running.pop(ref)
                self._idle.append(i)
                upd, deltas, fills = ray.get(ref)
                self.add_counters(deltas)
                for k, (B, A) in fills.items():
                    g = self.glob.get(k)
                    if g is not None and g.B is None:
                        g.B, g.A = B, A
                self._done[h] = upd
                self.trained()
            self._dispatch()
        return [self._done.pop(h) for h in handles]

    def _begin_round(self, round_index: int) -> None:
        """Ship the round-start state once; every actor takes it before its next task (actor calls run in order)."""
        if self._queue or self._running:
            raise RuntimeError(f"round {round_index} starts with updates of round {self._round} not collected")
        state = self._ray.put({"glob": self.glob, "head": self.head, "default_resize": self.default_resize,
                               "max_rank": self._max_rank()})
        for a in self._actors:
            a.begin_round.remote(state)
        self._round = round_index

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            h, args = self._queue.popleft()
            i = self._idle.popleft()
            self._running[self._actors[i].update.remote(*args)] = (i, h)

    def close(self) -> None:
        """Kill the actors, shut down the Ray this learner started, restore this process's torch threads
        (idempotent; the learner's tables and counters stay readable)."""
        ray = self._ray
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        self._queue.clear()
        self._running.clear()
        if self._owned:
            self._owned = False
            ray.shutdown()
        torch.set_num_threads(self._threads_before)

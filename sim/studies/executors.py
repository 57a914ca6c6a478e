"""Executors: run independent tasks (sweep cells) in a local process pool or on Ray, behind one interface.

An :class:`Executor` maps a picklable function over picklable tasks and yields ``(task, result)``
pairs as they complete, in completion order; a task whose execution itself breaks (a worker killed,
a Ray node lost) yields the exception as its result, so the caller can record it and go on. Tasks
never share state: every task is a whole run built from its own scenario and seed, so the results
do not depend on the executor, the worker count or the completion order.

* :class:`SerialExecutor`: in this process, one task after another (``--workers 1``).
* :class:`LocalExecutor`: a ``concurrent.futures`` process pool (``spawn`` start method, so no torch
  or thread state is inherited). Workers ignore SIGINT (the parent owns Ctrl-C) and, on Linux, are
  killed by the kernel if the parent dies (``PR_SET_PDEATHSIG``), so a killed sweep leaves no
  orphan writing into its directory.
* :class:`SharedExecutor`: one of several studies' handle on one :class:`LocalExecutor` they share
  (studies run in threads, their cells in one pool, so the pool stays full across study boundaries).
* :class:`RayExecutor`: each task is one Ray task (``num_cpus=1``, no retries). ``ray.init()``
  starts a local Ray with ``workers`` CPUs, or connects to ``address`` (an existing cluster whose
  nodes have fedfleet installed).

``close(cancel=True)`` stops running tasks (kills pool workers, ``ray.cancel(force=True)``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


class Executor(ABC):
    """Where independent tasks run: maps a picklable function over picklable tasks."""

    name: str  # the --backend this executor implements ("local" or "ray")
    workers: int  # how many tasks run at once

    @abstractmethod
    def imap_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` as tasks finish; an exception is yielded as the result."""

    @abstractmethod
    def close(self, cancel: bool = False) -> None:
        """Release the workers; with ``cancel``, stop the tasks still running."""


class SerialExecutor(Executor):
    """In this process, one task after another (``--workers 1``)."""

    name = "local"
    workers = 1

    def imap_unordered(self, fn, tasks):
        """Each task in turn; its exception, if it raises, is its result."""
        for t in tasks:
            try:
                res = fn(t)
            except Exception as e:  # noqa: BLE001 - handed to the caller like a lost worker
                res = e
            yield t, res

    def close(self, cancel: bool = False) -> None:
        """Nothing to release."""


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # noqa: PLC0415

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:  # pragma: no cover - exotic libc
            pass


class LocalExecutor(Executor):
    """A process pool of ``workers`` processes (spawned, SIGINT ignored, die with the parent)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        import multiprocessing as mp  # noqa: PLC0415

        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                         initializer=_worker_init)

    def start(self) -> None:
        """Spawn every worker now, from the calling thread. The pool spawns workers lazily, from the thread
        that submits, and the kernel kills a worker when the *thread* that spawned it ends
        (``PR_SET_PDEATHSIG``): a pool that several threads share (:class:`SharedExecutor`) must be
        started by the thread that outlives them. ``workers`` tasks queued back to back each spawn a
        process (none is idle yet: a spawned interpreter takes far longer to start than a submit)."""
        pids = {f.result() for f in [self._pool.submit(os.getpid) for _ in range(self.workers)]}
        log.debug("local pool started: %d worker processes", len(pids))

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        """Queue one task (the pool runs queued tasks in submission order)."""
        return self._pool.submit(fn, task)

    def imap_unordered(self, fn, tasks):
        """Every task submitted to the pool; results in completion order (a broken pool's error as result)."""
        yield from _completed({self.submit(fn, t): t for t in tasks})

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; with ``cancel``, kill its processes first."""
        if cancel:
            for p in list((getattr(self._pool, "_processes", None) or {}).values()):
                try:
                    p.kill()
                except (OSError, AttributeError):
                    pass
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _completed(pending: dict[Future, Any]) -> Iterator[tuple[Any, Any]]:
    """``(task, result)`` as the futures of ``pending`` (future -> task) finish; an error is the result."""
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in done:
            t = pending.pop(f)
            try:
                res = f.result()
            except Exception as e:  # noqa: BLE001 - e.g. BrokenProcessPool
                res = e
            yield t, res


class SharedExecutor(Executor):
    """One study's handle on a :class:`LocalExecutor` that several studies, each in its own thread, use at
    once (start the pool first, :meth:`LocalExecutor.start`): its tasks join the shared pool's queue
    (``submitted`` is set once they all have, so a caller can start studies in a chosen order, e.g.
    longest cells first); ``close()`` leaves the pool to its owner, ``close(cancel=True)`` cancels the
    whole pool (Ctrl-C stops every study)."""

    name = "local"

    def __init__(self, pool: LocalExecutor) -> None:
        self.pool = pool
        self.workers = pool.workers
        self.submitted = threading.Event()

    def imap_unordered(self, fn, tasks):
        """Every task queued on the shared pool, then results in completion order."""
        try:
            pending = {self.pool.submit(fn, t): t for t in tasks}
        finally:
            self.submitted.set()
        yield from _completed(pending)

    def close(self, cancel: bool = False) -> None:
        """Nothing unless ``cancel``: the pool's owner shuts it down."""
        if cancel:
            self.pool.close(cancel=True)


class RayExecutor(Executor):
    """Ray tasks (one CPU each). Starts a local Ray with ``workers`` CPUs unless ``address`` is given."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray  # noqa: PLC0415
        except ImportError as e:  # pragma: no cover - ray is a base requirement
            raise RuntimeError("--backend ray needs the ray package (pip install ray)") from e
        self._ray = ray
        self.workers = workers
        self._owned = not ray.is_initialized()
        if self._owned:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._refs: dict[Any, Any] = {}

    def imap_unordered(self, fn, tasks):
        """Every task as one Ray task; results in completion order (a lost worker's error as result)."""
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        self._refs = {remote.remote(t): t for t in tasks}
        while self._refs:
            done, _ = ray.wait(list(self._refs), num_returns=1)
            for ref in done:
                t = self._refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a worker or node lost, or the task raised
                    res = e
                yield t, res

    def close(self, cancel: bool = False) -> None:
        """Forget the tasks (with ``cancel``, force-cancel them) and stop the Ray this executor started."""
        if cancel:
            for ref in list(self._refs):
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished
                    pass
        self._refs = {}
        if self._owned:
            self._ray.shutdown()


def make_executor(backend: str = "local", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor for ``--backend``; ``workers`` defaults to the machine's CPU count."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    if backend == "ray":
        return RayExecutor(n, address)
    if address:
        raise ValueError("--address is only for --backend ray")
    return SerialExecutor() if n == 1 else LocalExecutor(n)

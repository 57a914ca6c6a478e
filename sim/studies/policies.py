"""Comparisons: run several policies on the same fleet, seed and data, through the cell runner.

A scenario with ``policies: {label: {name, params}}`` runs one child run per label under one parent
directory, ``DIR/<scenario>/<run id>/<label>/``, each a complete run directory (its resolved
scenario has ``algorithm`` set to the policy and no ``policies``). Everything but the strategy is
the same: fleet, dynamics and data partition come from the one seed, and every random stream is
named, so policies see identical device draws.

The children are cells of :mod:`sim.studies.cells` (cell id = label, cells directory = the parent),
so they run on any executor (serial, a local process pool, Ray) with results independent of it, and
a comparison resumes: :func:`run_policies` with ``parent`` set skips every child that finished (and
is complete). One process at a time writes a parent: the comparison holds its lock (:mod:`sim.lock`),
and a second writer (``fedfleet run --resume`` of the same parent, say) refuses at once.
The parent holds ``scenario.yaml`` (the scenario with its ``policies``), ``compare.md`` and
``compare.csv`` (:func:`sim.views.compare.compare_table` over the finished children, in label order)
and ``status.json`` (finished | failed | interrupted, the labels, the failures, and ``base_dir``:
where the scenario's relative paths resolve, for a resume).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim.loader import resolved_dict, scenario_digest
from sim.lock import DirectoryLock
from sim.scenario import Scenario
from sim.store import atomic_write_json, atomic_write_text, atomic_write_yaml, new_run_dir, read_regular
from sim.studies.cells import StudyInterrupted, finished_cells, run_cells
from sim.studies.executors import Executor, SerialExecutor
from sim.views.compare import compare_table, format_table

log = logging.getLogger(__name__)


def policy_scenarios(sc: Scenario) -> dict[str, Scenario]:
    """One scenario per policy label: ``algorithm`` replaced, ``policies`` removed."""
    out = {}
    for label, spec in (sc.policies or {}).items():
        out[label] = sc.model_copy(update={"algorithm": spec, "policies": None}, deep=True)
    return out


@dataclass
class Comparison:
    """A comparison's parent directory, its table (one row per finished child) and failures (label -> error)."""

    parent: Path
    table: pd.DataFrame
    failures: dict[str, str] = field(default_factory=dict)


def comparison_dir(sc: Scenario, out_root: Path | None = None) -> Path:
    """A new parent directory ``OUT/<scenario>/<run id>/`` holding the scenario (with its policies)."""
    from sim.runner import versions  # noqa: PLC0415 - the runner imports the engine

    root = Path(out_root if out_root is not None else sc.output.dir)
    digest = scenario_digest(sc)
    parent = new_run_dir(root, sc.name or "scenario", sc.output.run_name or f"seed{sc.seed}-{digest[:8]}")
    atomic_write_yaml(parent / "scenario.yaml", {**resolved_dict(sc), "_meta": {"digest": digest, "versions": versions()}})
    return parent


def comparison_base_dir(parent: Path) -> Path | None:
    """The ``base_dir`` recorded in a comparison's ``status.json`` (None if absent)."""
    try:
        base = json.loads(read_regular(Path(parent) / "status.json", 1 << 20)).get("base_dir")  # never a FIFO
    except (OSError, ValueError, AttributeError):
        return None
    return Path(base) if isinstance(base, str) and base else None


PARENT_FILES = ("scenario.yaml", "status.json", "compare.md", "compare.csv")
"""The files a comparison writes into its parent directory (besides one directory per policy)."""


def run_policies(sc: Scenario, base_dir: Path | None = None, out_root: Path | None = None,
                 executor: Executor | None = None, parent: Path | None = None,
                 on_cell: Callable[[dict, int, int], None] | None = None) -> Comparison:
    """Run every policy of ``sc`` as a cell of one parent directory (a new one under ``out_root``, or
    ``parent`` to resume it: finished children are kept); returns the :class:`Comparison`.

    Holds the parent's writer lock throughout (:class:`sim.lock.DirectoryLock`): a second writer of
    the same parent raises :class:`sim.lock.DirectoryBusy` at once (and this one's executor is
    closed); with the lock held, what killed writers left there is removed. A policy whose run fails
    is logged and recorded in ``failures``; the others go on. ``on_cell(row, done, total)`` is called
    after each completed child. Ctrl-C writes the table and status of what finished and raises
    :class:`~sim.studies.cells.StudyInterrupted`."""
    executor = executor or SerialExecutor()
    resumed = parent is not None
    try:
        parent = Path(parent) if resumed else comparison_dir(sc, out_root)
        lock = DirectoryLock(parent, "comparison").acquire()
    except BaseException:
        executor.close()
        raise
    try:
        lock.remove_leftovers(PARENT_FILES, temp_cells=True)
        return _run_locked(sc, base_dir, executor, parent, resumed, on_cell)
    finally:
        lock.release()


def _run_locked(sc: Scenario, base_dir: Path | None, executor: Executor, parent: Path, resumed: bool,
                on_cell: Callable[[dict, int, int], None] | None) -> Comparison:
    """The body of :func:`run_policies`, under the parent directory's lock."""
    children = policy_scenarios(sc)
    rows, repaired = finished_cells(parent, list(children))
    todo = {label: child for label, child in children.items() if label not in rows}
    started = time.time()
    log.info("%s: %d policies, %d already finished, %d incomplete (recomputed), %d to run on %s x%d", parent,
             len(children), len(rows), len(repaired), len(todo), executor.name, executor.workers)
    _write_status(parent, "running", children, rows, started, base_dir, resumed)

    def on_row(label: str, row: dict[str, Any]) -> None:
        rows[label] = row
        if on_cell is not None:
            on_cell(row, len(rows), len(children))

    try:
        run_cells(todo, parent, executor, base_dir, on_row)
    except KeyboardInterrupt:
        _finish(parent, "interrupted", sc, children, rows, started, base_dir, resumed)
        raise StudyInterrupted(f"interrupted: {sum(r['status'] == 'finished' for r in rows.values())} of "
                               f"{len(children)} policies finished; fedfleet run --resume {parent} continues") from None
    return _finish(parent, None, sc, children, rows, started, base_dir, resumed)


def _finish(parent: Path, status: str | None, sc: Scenario, children: dict[str, Scenario], rows: dict[str, dict],
            started: float, base_dir: Path | None, resumed: bool) -> Comparison:
    """Write ``compare.md``, ``compare.csv`` and the final ``status.json`` (failed when a child failed)."""
    done = [label for label in children if rows.get(label, {}).get("status") == "finished"]
    table = compare_table([parent / label for label in done], sc.training.target_accuracy, labels=done)
    atomic_write_text(parent / "compare.md", format_table(table, "md"))
    atomic_write_text(parent / "compare.csv", format_table(table, "csv"))
    failures = _write_status(parent, status, children, rows, started, base_dir, resumed)
    return Comparison(parent, table, failures)


def _write_status(parent: Path, status: str | None, children: dict[str, Scenario], rows: dict[str, dict],
                  started: float, base_dir: Path | None, resumed: bool) -> dict[str, str]:
    """The parent's ``status.json``; ``status`` None means finished, or failed when a child failed.
    Returns the failures (label -> error), in label order."""
    failures = {label: rows[label]["error"] for label in children if rows.get(label, {}).get("status") == "failed"}
    if status is None:
        status = "failed" if failures else "finished"
    doc = {"status": status, "started_unix": started, "resumed": resumed, "policies": list(children),
           "failures": failures, "base_dir": str(base_dir) if base_dir is not None else None}
    if status != "running":
        doc["finished_unix"] = time.time()
    atomic_write_json(parent / "status.json", doc)
    return failures

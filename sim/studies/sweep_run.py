"""Running a sweep: every cell a complete run directory, resumable, one failure never stops the rest.

Layout::

    <out>/<sweep name>/
        sweep.json          the sweep spec and the cell list (index, id, policy, values, seed)
        sweep.parquet       one row per cell: cell_index, policy, the matrix keys (verbatim column
                            names), seed, cell_id, status (finished | failed | pending), error, and
                            the summary metrics METRICS. No host times or timestamps, so the same
                            sweep gives the same file whatever the backend, worker count or order.
        status.json         running | finished | failed | interrupted, with counts (finished, failed,
                            pending, skipped_already_finished, repaired_incomplete) and timestamps
        cells/<cell id>/    the cell's run directory (results/README.md); a failed cell holds
                            status.json with the error and traceback.txt

Cells are run by :mod:`sim.studies.cells` (each computed in a temporary directory and renamed into
place; a rerun skips finished cells whose files are all present and readable, recomputes incomplete
ones and retries failed ones). The index is rewritten atomically after every cell, so a killed sweep
leaves a valid index of what finished. One process at a time writes a sweep directory: the sweep
holds its lock (:mod:`sim.lock`, ``<out>/<sweep name>/.lock`` while it runs), and a second sweep into
it refuses at once, naming the holder's pid.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.lock import DirectoryLock
from sim.store import atomic_write_json, atomic_write_parquet, safe_child
from sim.studies.cells import METRICS, StudyInterrupted, finished_cells, run_cells
from sim.studies.executors import Executor, SerialExecutor
from sim.studies.sweep import SweepCell, SweepSpec

log = logging.getLogger(__name__)


SWEEP_FILES = ("sweep.json", "sweep.parquet", "status.json")
"""The files a sweep writes into its directory (besides ``cells/``)."""


def run_sweep(spec: SweepSpec, cells: list[SweepCell], out_root: Path, executor: Executor | None = None,
              base_dir: Path | None = None, on_cell: Callable[[dict, int, int], None] | None = None) -> Path:
    """Run every cell not finished yet under ``out_root/<spec.name>/``; returns the sweep directory.

    Holds the sweep directory's writer lock throughout (:class:`sim.lock.DirectoryLock`): a second
    sweep into the same directory raises :class:`sim.lock.DirectoryBusy` at once (and this one's
    executor is closed). With the lock held, what killed sweeps left (temporary files of the sweep's
    own files, temporary cell directories) is removed. ``on_cell(row, done, total)`` is called after
    each completed cell (progress bars)."""
    executor = executor or SerialExecutor()
    sweep_dir = safe_child(Path(out_root), spec.name or "sweep")
    cells_dir = sweep_dir / "cells"
    lock = DirectoryLock(sweep_dir, "sweep")
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except BaseException:
        executor.close()
        raise
    try:
        lock.remove_leftovers(SWEEP_FILES)
        lock.remove_leftovers(where=cells_dir, temp_cells=True)
        _run_locked(spec, cells, sweep_dir, executor, base_dir, on_cell)
    finally:
        lock.release()
    return sweep_dir


def _run_locked(spec: SweepSpec, cells: list[SweepCell], sweep_dir: Path, executor: Executor,
                base_dir: Path | None, on_cell: Callable[[dict, int, int], None] | None) -> None:
    """The body of :func:`run_sweep`, under the sweep directory's lock."""
    cells_dir = sweep_dir / "cells"
    atomic_write_json(sweep_dir / "sweep.json", {
        **spec.model_dump(mode="json"), "n_cells": len(cells),
        "cells": [{"cell_index": c.index, "cell_id": c.cell_id, "policy": c.policy, "values": c.values,
                   "seed": c.seed} for c in cells]})
    rows, repaired = finished_cells(cells_dir, [c.cell_id for c in cells])
    todo = {c.cell_id: c.scenario for c in cells if c.cell_id not in rows}
    started = time.time()
    progress = _Progress(started, len(rows), len(repaired))
    log.info("sweep %s: %d cells, %d already finished, %d incomplete (recomputed), %d to run on %s x%d", spec.name,
             len(cells), len(rows), len(repaired), len(todo), executor.name, executor.workers)
    _write_status(sweep_dir, "running", cells, rows, progress)
    write_index(sweep_dir, spec, cells, rows)

    def on_row(cell_id: str, row: dict[str, Any]) -> None:
        rows[cell_id] = row
        write_index(sweep_dir, spec, cells, rows)
        if on_cell is not None:
            on_cell(row, len(rows), len(cells))

    try:
        run_cells(todo, cells_dir, executor, base_dir, on_row)
    except KeyboardInterrupt:
        write_index(sweep_dir, spec, cells, rows)
        _write_status(sweep_dir, "interrupted", cells, rows, progress)
        raise StudyInterrupted(f"interrupted: {sum(r['status'] == 'finished' for r in rows.values())} of "
                               f"{len(cells)} cells finished; run the same command again to resume") from None
    failed = sum(r["status"] == "failed" for r in rows.values())
    _write_status(sweep_dir, "failed" if failed else "finished", cells, rows, progress)


@dataclass(frozen=True)
class _Progress:
    """When this sweep run started, how many cells an earlier run had finished, how many it repaired."""

    started_unix: float
    skipped: int
    repaired: int


def index_frame(spec: SweepSpec, cells: list[SweepCell], rows: dict[str, dict]) -> pd.DataFrame:
    """The sweep index: one row per cell in cell order (pending cells have NaN metrics)."""
    keys = list(spec.matrix)
    out = []
    for c in cells:
        r = rows.get(c.cell_id, {"status": "pending", "error": ""})
        out.append({"cell_index": c.index, "policy": c.policy, **{k: c.values[k] for k in keys}, "seed": c.seed,
                    "cell_id": c.cell_id, "status": r["status"], "error": r.get("error", ""),
                    **{m: r.get(m) for m in METRICS}})
    df = pd.DataFrame(out, columns=["cell_index", "policy", *keys, "seed", "cell_id", "status", "error", *METRICS])
    for m in METRICS:
        if m in ("bytes_total", "rounds_completed"):
            df[m] = pd.to_numeric(df[m], errors="coerce").astype("Int64")
        elif m != "stop_reason":
            df[m] = pd.to_numeric(df[m], errors="coerce").astype(float)
    df["stop_reason"] = df["stop_reason"].astype("string")
    for k in keys:  # mixed-type (1 and "auto") or structured ({name: ...}) matrix values are stored as text
        if df[k].map(type).nunique() > 1 or df[k].map(lambda v: isinstance(v, (dict, list))).any():
            df[k] = df[k].map(lambda v: json.dumps(v) if not isinstance(v, str) else v)
    return df


def write_index(sweep_dir: Path, spec: SweepSpec, cells: list[SweepCell], rows: dict[str, dict]) -> None:
    """``sweep.parquet``: :func:`index_frame`, written atomically."""
    atomic_write_parquet(sweep_dir / "sweep.parquet", index_frame(spec, cells, rows))


def _write_status(sweep_dir: Path, status: str, cells: list[SweepCell], rows: dict[str, dict],
                  progress: _Progress) -> None:
    counts = {s: sum(r["status"] == s for r in rows.values()) for s in ("finished", "failed")}
    counts["pending"] = len(cells) - len(rows)
    atomic_write_json(sweep_dir / "status.json", {
        "status": status, "cells": len(cells), **counts, "skipped_already_finished": progress.skipped,
        "repaired_incomplete": progress.repaired, "started_unix": progress.started_unix, "updated_unix": time.time(),
        "failures": {cid: r["error"] for cid, r in rows.items() if r["status"] == "failed"}})

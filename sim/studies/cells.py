"""Running cells: each cell one complete run directory, resumable, one failure never stops the rest.

A cell is one scenario run into ``<cells dir>/<cell id>/``: a sweep cell (``cells/<cell id>/``) or a
child of a comparison of policies (``<parent>/<label>/``). It is computed in
``<cells dir>/.<cell id>.<pid>.tmp/<cell id>/`` (so the run's own name, the ``run_id`` of its
``summary.json``, is the cell id) and renamed into place when it ends, finished or failed, so a cell
directory is always complete. A rerun skips every cell whose directory says finished, retries failed
ones, and discards leftover temporary directories of a killed run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.store import atomic_write_json, atomic_write_text, safe_child
from sim.studies.executors import Executor

log = logging.getLogger(__name__)

METRICS = ["final_accuracy", "time_to_target_s", "sim_time_s", "mean_idle_fraction", "mean_round_s", "bytes_total",
           "final_mean_prune_ratio", "rounds_completed", "stop_reason"]


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable)."""

    cell_id: str
    scenario: Any  # sim.scenario.Scenario
    base_dir: str | None
    cells_dir: str


def cell_row(summary: dict) -> dict[str, Any]:
    """The index metrics of a finished cell, from its ``summary.json``."""
    row = {k: summary.get(k) for k in METRICS if k != "bytes_total"}
    row["bytes_total"] = int(summary.get("bytes_up_total", 0)) + int(summary.get("bytes_down_total", 0))
    return row


def read_cell(cell_dir: Path) -> dict[str, Any] | None:
    """(status, error, metrics) of a completed cell directory, or None if it has not completed."""
    try:
        st = json.loads((cell_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return None
    if st.get("status") == "finished":
        try:
            return {"status": "finished", "error": "", **cell_row(json.loads((cell_dir / "summary.json").read_text()))}
        except (FileNotFoundError, json.JSONDecodeError):
            return None
    if st.get("status") == "failed":
        return {"status": "failed", "error": st.get("error", "")}
    return None


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell into a temporary directory and rename it into place; returns its index fields.

    Never raises for a failing scenario: the error is recorded in the cell's ``status.json`` and
    ``traceback.txt`` and returned as status ``failed``."""
    from sim.runner import run_scenario  # noqa: PLC0415 - keeps the parent light

    cells = Path(task.cells_dir)
    final = safe_child(cells, task.cell_id)
    wrapper = safe_child(cells, f".{task.cell_id}.{os.getpid()}.tmp")
    if wrapper.exists():
        shutil.rmtree(wrapper)
    tmp = wrapper / task.cell_id
    tmp.mkdir(parents=True)
    try:
        run_scenario(task.scenario, Path(task.base_dir) if task.base_dir else None, run_dir=tmp, progress=False)
    except Exception as e:  # noqa: BLE001 - a failing cell is a result, not a crash of the sweep
        atomic_write_text(tmp / "traceback.txt", traceback.format_exc())
        st = tmp / "status.json"
        if not st.is_file() or json.loads(st.read_text()).get("status") != "failed":
            atomic_write_json(st, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    wrapper.rmdir()
    row = read_cell(final)
    assert row is not None
    return row


def finished_cells(cells_dir: Path, cell_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Cell id -> index fields of every cell among ``cell_ids`` whose directory under ``cells_dir``
    says finished (these are skipped by a rerun). Also discards the temporary directories of cells a
    killed run was computing."""
    for leftover in Path(cells_dir).glob(".*.tmp"):
        if leftover.is_dir():  # not a file being written atomically beside the cells
            shutil.rmtree(leftover, ignore_errors=True)
    rows = {}
    for cid in cell_ids:
        done = read_cell(safe_child(Path(cells_dir), cid))
        if done is not None and done["status"] == "finished":
            rows[cid] = done
    return rows


def run_cells(todo: dict[str, Any], cells_dir: Path, executor: Executor, base_dir: Path | None,
              on_row: Callable[[str, dict[str, Any]], None]) -> None:
    """Run every cell of ``todo`` (cell id -> scenario) into ``cells_dir/<cell id>/`` on ``executor``,
    calling ``on_row(cell_id, fields)`` as each completes (a cell the executor lost is a failed row).
    Closes the executor; on Ctrl-C it cancels the running cells first and re-raises."""
    tasks = [CellTask(cid, sc, str(base_dir) if base_dir else None, str(cells_dir)) for cid, sc in todo.items()]
    try:
        for task, res in executor.imap_unordered(run_cell, tasks):
            if isinstance(res, BaseException):
                res = {"status": "failed", "error": f"{type(res).__name__}: {res}"}
                log.error("cell %s: the executor lost it: %s", task.cell_id, res["error"])
            elif res["status"] == "failed":
                log.error("cell %s failed: %s", task.cell_id, res["error"])
            on_row(task.cell_id, res)
    except KeyboardInterrupt:
        executor.close(cancel=True)
        raise
    executor.close()


class StudyInterrupted(Exception):
    """Raised after Ctrl-C once a sweep's index (or a comparison's table) and status have been written."""

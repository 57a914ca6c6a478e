"""Running cells: each cell one complete run directory, resumable, one failure never stops the rest.

A cell is one scenario run into ``<cells dir>/<cell id>/``: a sweep cell (``cells/<cell id>/``) or a
child of a comparison of policies (``<parent>/<label>/``). It is computed in
``<cells dir>/.<cell id>.<pid>.tmp/<cell id>/`` (so the run's own name, the ``run_id`` of its
``summary.json``, is the cell id) and renamed into place when it ends, finished or failed.

The sweep or comparison that runs cells holds its directory's writer lock (:mod:`sim.lock`) for the
whole time, so no other process writes the same cells; it removes the temporary cell directories of
killed runs only while holding that lock (:meth:`sim.lock.DirectoryLock.remove_leftovers`).

A rerun skips every cell that is finished *and complete* (:func:`cell_state`: ``status.json`` says
finished, ``summary.json`` and ``scenario.yaml`` parse, ``rounds.parquet`` and
``device_rounds.parquet`` (and, with real learning, ``evals.parquet`` and ``partition.parquet``) have
readable parquet footers, and the two tables have the row counts the summary states). A cell that
says finished but fails this check is logged and recomputed (repaired); failed cells are retried.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.store import atomic_write_json, atomic_write_text, open_regular, read_regular, safe_child, safe_name
from sim.studies.executors import Executor

log = logging.getLogger(__name__)

METRICS = ["final_accuracy", "time_to_target_s", "sim_time_s", "mean_idle_fraction", "mean_idle_fastest",
           "mean_straggler_gap", "mean_round_s", "bytes_total", "final_mean_prune_ratio", "rounds_completed", "stop_reason"]


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


MAX_CELL_JSON_BYTES = 64 * 2**20
"""The most bytes of a cell's ``status.json``, ``summary.json`` or ``scenario.yaml`` read back."""
TABLES = ("rounds.parquet", "device_rounds.parquet")
LEARNING_TABLES = ("evals.parquet", "partition.parquet")


class IncompleteCell(Exception):
    """A cell file that is missing or unreadable; ``str(e)`` names the file and what is wrong."""


def cell_state(cell_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """``(index fields, "")`` of a completed cell (finished and complete, or failed), else ``(None, why)``:
    why is empty for a cell that never completed (absent, running) and names the defect of one whose
    status says finished but whose files are not all present and readable."""
    try:
        if not stat.S_ISDIR(os.lstat(cell_dir).st_mode):
            return None, "not a directory"
        st = _json(cell_dir / "status.json", missing_ok=True)
    except FileNotFoundError:
        return None, ""
    except IncompleteCell as e:
        return None, str(e)
    if st is None:
        return None, ""
    if st.get("status") == "failed":
        return {"status": "failed", "error": str(st.get("error", ""))}, ""
    if st.get("status") != "finished":
        return None, ""
    try:
        return {"status": "finished", "error": "", **cell_row(_complete_summary(cell_dir))}, ""
    except IncompleteCell as e:
        return None, str(e)


def read_cell(cell_dir: Path) -> dict[str, Any] | None:
    """(status, error, metrics) of a completed cell directory, or None if it has not completed
    (or says finished but is incomplete: see :func:`cell_state`)."""
    return cell_state(cell_dir)[0]


def _complete_summary(cell_dir: Path) -> dict:
    """The summary of a finished cell once every file it must hold is present and readable."""
    summary = _json(cell_dir / "summary.json")
    assert summary is not None
    try:
        if not isinstance(yaml.safe_load(read_regular(cell_dir / "scenario.yaml", MAX_CELL_JSON_BYTES)), dict):
            raise IncompleteCell("scenario.yaml: not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise IncompleteCell(f"scenario.yaml: {_why(e)}") from None
    tables = TABLES + (LEARNING_TABLES if summary.get("learning") == "real" else ())
    rows = {name: _parquet_rows(cell_dir / name) for name in tables}
    for name, key in (("rounds.parquet", "rounds_completed"), ("device_rounds.parquet", "device_rounds")):
        if rows[name] != summary.get(key):
            raise IncompleteCell(f"{name}: {rows[name]} rows, summary.json says {key} = {summary.get(key)!r}")
    return summary


def _json(path: Path, missing_ok: bool = False) -> dict | None:
    """A JSON object from a regular file (None when absent and ``missing_ok``); IncompleteCell when
    missing or unreadable."""
    try:
        doc = json.loads(read_regular(path, MAX_CELL_JSON_BYTES))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise IncompleteCell(f"{path.name}: missing") from None
    except (OSError, ValueError) as e:
        raise IncompleteCell(f"{path.name}: {_why(e)}") from None
    if not isinstance(doc, dict):
        raise IncompleteCell(f"{path.name}: not a JSON object")
    return doc


def _parquet_rows(path: Path) -> int:
    """Rows of a parquet file, from its footer (IncompleteCell when missing or unreadable)."""
    import pyarrow as pa  # noqa: PLC0415 - pandas loads it anyway; kept out of import time
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        with open_regular(path) as f:
            return int(pq.read_metadata(f).num_rows)
    except (ValueError, pa.ArrowException):  # before OSError: pyarrow's IO errors are both
        raise IncompleteCell(f"{path.name}: not a readable parquet file") from None
    except OSError as e:  # missing, a link, a FIFO
        raise IncompleteCell(f"{path.name}: {_why(e)}") from None


def _why(e: Exception) -> str:
    """A short reason that quotes nothing of the file's content."""
    if isinstance(e, FileNotFoundError):
        return "missing"
    if isinstance(e, OSError):
        return e.strerror if e.strerror and "regular file" in e.strerror else f"unreadable ({e.strerror or 'I/O error'})"
    if isinstance(e, yaml.YAMLError):
        return "not valid YAML"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON (line {e.lineno}, column {e.colno})"
    return "too large" if "larger than" in str(e) else "unreadable"


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell into a temporary directory and rename it into place; returns its index fields.

    Never raises for a failing scenario: the error is recorded in the cell's ``status.json`` and
    ``traceback.txt`` and returned as status ``failed``."""
    from sim.runner import run_scenario  # noqa: PLC0415 - keeps the parent light

    cells = Path(task.cells_dir)
    final = cells / safe_name(task.cell_id)  # not resolved: a link left there is replaced, never followed
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
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():  # an earlier, failed or incomplete, attempt
        shutil.rmtree(final)
    os.replace(tmp, final)
    wrapper.rmdir()
    row, why = cell_state(final)
    if row is None:  # a run that says finished must have written every file; this one did not
        return {"status": "failed", "error": f"the finished run is incomplete: {why}"}
    return row


def finished_cells(cells_dir: Path, cell_ids: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``(rows, repaired)``: cell id -> index fields of every cell among ``cell_ids`` whose directory
    under ``cells_dir`` is finished and complete (a rerun skips these), and the ids of cells whose
    status says finished but whose files are not all present and readable (logged; a rerun recomputes
    them)."""
    rows, repaired = {}, []
    for cid in cell_ids:
        done, why = cell_state(Path(cells_dir) / safe_name(cid))  # lstat: a link there is incomplete
        if done is not None and done["status"] == "finished":
            rows[cid] = done
        elif why:
            log.warning("cell %s is incomplete (%s); recomputing it", cid, why)
            repaired.append(cid)
    return rows, repaired


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

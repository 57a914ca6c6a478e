"""Running a sweep: every cell a complete run directory, resumable, one failure never stops the rest.

Layout::

    <out>/<sweep name>/
        sweep.json          the sweep spec and the cell list (index, id, policy, values, seed)
        sweep.parquet       one row per cell: cell_index, policy, the matrix keys (verbatim column
                            names), seed, cell_id, status (finished | failed | pending), error, and
                            the summary metrics METRICS. No host times or timestamps, so the same
                            sweep gives the same file whatever the backend, worker count or order.
        status.json         running | finished | failed | interrupted, with counts and timestamps
        cells/<cell id>/    the cell's run directory (results/README.md); a failed cell holds
                            status.json with the error and traceback.txt

A cell is computed in ``cells/.<cell id>.<pid>.tmp/`` and renamed to ``cells/<cell id>/`` when it
ends (finished or failed), so a cell directory is always complete. A rerun skips every cell whose
directory says finished (its row is rebuilt from its ``summary.json``), retries failed cells, and
discards leftover temporary directories of a killed sweep. The index is rewritten atomically after
every cell, so a killed sweep leaves a valid index of what finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.executors import Executor, SerialExecutor
from sim.store import atomic_write_json, atomic_write_parquet, atomic_write_text, safe_child
from sim.sweep import SweepCell, SweepSpec

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
    tmp = safe_child(cells, f".{task.cell_id}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
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
    row = read_cell(final)
    assert row is not None
    return row


class SweepInterrupted(Exception):
    """Raised after Ctrl-C once the index and status have been written."""


def run_sweep(spec: SweepSpec, cells: list[SweepCell], out_root: Path, executor: Executor | None = None,
              base_dir: Path | None = None, on_cell: Callable[[dict, int, int], None] | None = None) -> Path:
    """Run every cell not finished yet under ``out_root/<spec.name>/``; returns the sweep directory.

    ``on_cell(row, done, total)`` is called after each completed cell (progress bars)."""
    executor = executor or SerialExecutor()
    sweep_dir = safe_child(Path(out_root), spec.name or "sweep")
    cells_dir = sweep_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    for leftover in cells_dir.glob(".*.tmp"):  # cells a killed sweep was computing
        shutil.rmtree(leftover, ignore_errors=True)
    atomic_write_json(sweep_dir / "sweep.json", {
        **spec.model_dump(mode="json"), "n_cells": len(cells),
        "cells": [{"cell_index": c.index, "cell_id": c.cell_id, "policy": c.policy, "values": c.values,
                   "seed": c.seed} for c in cells]})
    rows: dict[str, dict] = {}
    todo = []
    for c in cells:
        done = read_cell(cells_dir / c.cell_id)
        if done is not None and done["status"] == "finished":
            rows[c.cell_id] = done
        else:
            todo.append(c)
    started = time.time()
    skipped = len(rows)
    log.info("sweep %s: %d cells, %d already finished, %d to run on %s x%d", spec.name, len(cells), skipped,
             len(todo), executor.name, executor.workers)
    _write_status(sweep_dir, "running", cells, rows, started, skipped)
    write_index(sweep_dir, spec, cells, rows)
    by_id = {c.cell_id: c for c in todo}
    tasks = [CellTask(c.cell_id, c.scenario, str(base_dir) if base_dir else None, str(cells_dir)) for c in todo]
    try:
        for task, res in executor.imap_unordered(run_cell, tasks):
            if isinstance(res, BaseException):
                res = {"status": "failed", "error": f"{type(res).__name__}: {res}"}
                log.error("cell %s: the executor lost it: %s", task.cell_id, res["error"])
            elif res["status"] == "failed":
                log.error("cell %s (%s) failed: %s", task.cell_id, by_id[task.cell_id].values, res["error"])
            rows[task.cell_id] = res
            write_index(sweep_dir, spec, cells, rows)
            if on_cell is not None:
                on_cell(res, len(rows), len(cells))
    except KeyboardInterrupt:
        executor.close(cancel=True)
        write_index(sweep_dir, spec, cells, rows)
        _write_status(sweep_dir, "interrupted", cells, rows, started, skipped)
        raise SweepInterrupted(f"interrupted: {sum(r['status'] == 'finished' for r in rows.values())} of "
                               f"{len(cells)} cells finished; run the same command again to resume") from None
    executor.close()
    failed = sum(r["status"] == "failed" for r in rows.values())
    _write_status(sweep_dir, "failed" if failed else "finished", cells, rows, started, skipped)
    return sweep_dir


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
    atomic_write_parquet(sweep_dir / "sweep.parquet", index_frame(spec, cells, rows))


def _write_status(sweep_dir: Path, status: str, cells: list[SweepCell], rows: dict[str, dict], started: float,
                  skipped: int) -> None:
    counts = {s: sum(r["status"] == s for r in rows.values()) for s in ("finished", "failed")}
    counts["pending"] = len(cells) - len(rows)
    atomic_write_json(sweep_dir / "status.json", {
        "status": status, "cells": len(cells), **counts, "skipped_already_finished": skipped,
        "started_unix": started, "updated_unix": time.time(),
        "failures": {cid: r["error"] for cid, r in rows.items() if r["status"] == "failed"}})

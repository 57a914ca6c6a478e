"""Reading results back: one run, a comparison of policies, or a sweep, as pandas DataFrames.

Three kinds of directory come out of fedfleet, all made of the same run directories
(``results/README.md``):

* a **run** (``fedfleet run``): ``summary.json`` + ``rounds.parquet`` + ``device_rounds.parquet``;
* a **comparison** (a scenario with ``policies:``): one child run directory per policy label;
* a **sweep** (``fedfleet sweep``): ``sweep.json`` + ``sweep.parquet`` (one row per cell) and
  ``cells/<cell id>/``, each a run directory.

:func:`collect` turns any of them into a list of :class:`RunData`, each labelled with its policy,
seed and swept values, which is what the figures and the report consume.
"""

from __future__ import annotations

import difflib
import json
import math
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

MAX_TEXT_BYTES = 50_000_000
"""Largest JSON or YAML results file read back (a scenario.yaml or summary.json is a few kB)."""


class ResultsError(ValueError):
    """A results file that is missing, not a regular file, or not readable as what it should be.
    ``str(e)`` names the file and never quotes its contents."""


def _regular(path: Path) -> Path:
    """``path`` if it is a regular file (a FIFO or device would block or stream forever)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except OSError as e:
        raise ResultsError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ResultsError(f"{path}: not a regular file")
    return path


def read_table(path: Path) -> pd.DataFrame:
    """A parquet results table; a truncated or foreign file is a :class:`ResultsError`."""
    try:
        return pd.read_parquet(_regular(path))
    except (OSError, ValueError, pa.ArrowException) as e:
        if isinstance(e, ResultsError):
            raise
        raise ResultsError(f"{path}: not a readable parquet file") from None


def _read_text(path: Path, what: str) -> str:
    try:
        with _regular(path).open("rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise ResultsError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise ResultsError(f"{path}: larger than {MAX_TEXT_BYTES} bytes, not a fedfleet {what} file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a readable {what} file (not UTF-8)") from None


def read_json_object(path: Path) -> dict:
    """A JSON results file holding an object (``summary.json``, ``sweep.json``)."""
    try:
        d = json.loads(_read_text(path, "JSON"))
    except (ValueError, RecursionError) as e:
        if isinstance(e, ResultsError):
            raise
        raise ResultsError(f"{path}: not a readable JSON file") from None
    if not isinstance(d, dict):
        raise ResultsError(f"{path}: not a JSON object")
    return d


def read_yaml_mapping(path: Path) -> dict:
    """A YAML results file holding a mapping (``scenario.yaml``), read with the safe loader."""
    try:
        d = yaml.safe_load(_read_text(path, "YAML"))
    except (yaml.YAMLError, RecursionError):
        raise ResultsError(f"{path}: not a readable YAML file") from None
    if not isinstance(d, dict):
        raise ResultsError(f"{path}: not a YAML mapping")
    return d


@dataclass
class RunData:
    """One finished run directory, loaded lazily. ``policy`` is the comparison label (or the
    algorithm name), ``values`` the swept matrix values of a sweep cell (empty otherwise)."""

    run_dir: Path
    policy: str = ""
    seed: int = 0
    values: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def scenario(self) -> dict:
        """The resolved scenario (every default filled in), without the ``_meta`` block."""
        d = read_yaml_mapping(self.run_dir / "scenario.yaml")
        d.pop("_meta", None)
        return d

    @cached_property
    def summary(self) -> dict:
        return read_json_object(self.run_dir / "summary.json")

    @cached_property
    def rounds(self) -> pd.DataFrame:
        return read_table(self.run_dir / "rounds.parquet")

    @cached_property
    def device_rounds(self) -> pd.DataFrame:
        return read_table(self.run_dir / "device_rounds.parquet")

    @cached_property
    def evals(self) -> pd.DataFrame | None:
        p = self.run_dir / "evals.parquet"
        return read_table(p) if p.exists() else None

    @property
    def has_accuracy(self) -> bool:
        return "accuracy" in self.rounds and bool(self.rounds["accuracy"].notna().any())


@dataclass
class SweepData:
    """A sweep directory: its spec (``sweep.json``), the index (``sweep.parquet``, one row per cell:
    cell_index, policy, the matrix columns, seed, cell_id, status, error and the summary metrics)."""

    sweep_dir: Path
    spec: dict
    index: pd.DataFrame

    @property
    def matrix_keys(self) -> list[str]:
        return list(self.spec.get("matrix", {}))

    def runs(self) -> list[RunData]:
        """The finished cells as :class:`RunData` (failed or missing cells are left out)."""
        out = []
        for _, row in self.index.iterrows():
            if row["status"] != "finished":
                continue
            values = {k: _py(row[k]) for k in self.matrix_keys}
            out.append(RunData(self.sweep_dir / "cells" / row["cell_id"], str(row["policy"]), int(row["seed"]), values))
        return out


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def load_run(run_dir: str | Path) -> RunData:
    """A run directory (``fedfleet run`` output, a comparison child, or a sweep cell)."""
    d = Path(run_dir)
    if not (d / "summary.json").is_file():
        raise FileNotFoundError(f"{d}: not a finished run directory (no summary.json)")
    rd = RunData(d)
    rd.policy = str(rd.scenario.get("algorithm", {}).get("name", d.name))
    rd.seed = int(rd.scenario.get("seed", 0))
    return rd


def load_sweep(sweep_dir: str | Path) -> SweepData:
    """A sweep directory written by ``fedfleet sweep`` (its ``sweep.json`` and ``sweep.parquet``)."""
    d = Path(sweep_dir)
    if not (d / "sweep.parquet").is_file():
        raise FileNotFoundError(f"{d}: not a sweep directory (no sweep.parquet)")
    return SweepData(d, read_json_object(d / "sweep.json"), read_table(d / "sweep.parquet"))


def kind_of(path: str | Path) -> str:
    """``run``, ``comparison`` or ``sweep`` (FileNotFoundError otherwise)."""
    p = Path(path)
    if (p / "sweep.parquet").is_file():
        return "sweep"
    if (p / "summary.json").is_file():
        return "run"
    if p.is_dir() and any((c / "summary.json").is_file() for c in p.iterdir()):
        return "comparison"
    raise FileNotFoundError(f"{p}: not a run, comparison or sweep directory")


def collect(path: str | Path) -> list[RunData]:
    """Every finished run under ``path`` with its policy label, seed and swept values.

    A comparison's children are labelled by their directory (the policy label); a sweep's cells by
    the ``policy`` column of its index."""
    p = Path(path)
    kind = kind_of(p)
    if kind == "sweep":
        return load_sweep(p).runs()
    if kind == "run":
        return [load_run(p)]
    out = []
    for c in sorted(c for c in p.iterdir() if (c / "summary.json").is_file()):
        rd = load_run(c)
        rd.policy = c.name
        out.append(rd)
    return out


def time_to_target(rounds: pd.DataFrame, target: float) -> float:
    """Simulated time (``t_end_s``) of the first round whose accuracy is >= ``target``; NaN if never."""
    if "accuracy" not in rounds or not len(rounds):
        return math.nan
    acc = rounds["accuracy"].to_numpy(dtype=float)
    hit = np.flatnonzero(acc >= target - 1e-12)
    return float(rounds["t_end_s"].iloc[hit[0]]) if len(hit) else math.nan


def majority_rate(summary: dict) -> float:
    """The majority-class rate of the evaluation set (``learning_info.majority_rate`` of ``summary.json``):
    the accuracy of a classifier that always answers the most frequent label. NaN when unknown
    (timing-only runs, or runs written before it was recorded)."""
    v = (summary.get("learning_info") or {}).get("majority_rate")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def eval_size(summary: dict) -> float:
    """How many examples each accuracy reading is computed on (``learning_info.n_eval``); NaN when unknown."""
    v = (summary.get("learning_info") or {}).get("n_eval")
    return float(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else math.nan


def binomial_se(accuracy: float, n_eval: float) -> float:
    """Standard error of one accuracy reading on ``n_eval`` examples: ``sqrt(a (1 - a) / n)``, the
    standard deviation of a binomial proportion (each example is a right/wrong trial). NaN when
    either is unknown. With ``a = 0.55`` and ``n = 200`` it is about 3.5 points."""
    if not (math.isfinite(accuracy) and math.isfinite(n_eval) and n_eval > 0):
        return math.nan
    return math.sqrt(accuracy * (1.0 - accuracy) / n_eval)


def automatic_target(best_per_run: list[float], majority: float, what: str = "run") -> tuple[float | None, str]:
    """The automatic target accuracy and where it came from: the highest accuracy every ``what``
    reached (``min`` of the per-run bests), unless that is at or below the majority-class rate
    ``majority`` (then a trivial classifier would "reach" it: no target, and the reason says so)."""
    if not best_per_run:
        return None, "no accuracy (timing-only runs)"
    target = min(best_per_run)
    if math.isfinite(majority) and target <= majority + 1e-12:
        return None, (f"no meaningful target: the highest accuracy every {what} reached ({100 * target:.1f}%) "
                      f"is at or below the majority-class rate ({100 * majority:.1f}%), so no speed-up is claimed")
    return target, f"highest accuracy every {what} reached"


def highest_majority(summaries: list[dict]) -> float:
    """The highest majority-class rate among ``summaries`` (NaN when none records one)."""
    rates = [m for m in (majority_rate(s) for s in summaries) if math.isfinite(m)]
    return max(rates) if rates else math.nan


def did_you_mean(word: str, options: list[str]) -> str:
    """``"; did you mean 'X'?"`` for the option closest to ``word`` (difflib's ratio >= 0.6), else ``""``."""
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


STOP_REASON_WORDS = {
    "rounds": "stopped after all training.rounds",
    "time_budget": "stopped at the simulated time budget training.time_budget_s",
    "target_accuracy": "stopped on reaching training.target_accuracy",
    "fleet_empty": "stopped: every device left the fleet (faults.leave_prob)",
    "no_device_available": "stopped: no device would ever be available again",
}


def stop_reason_words(reason: Any) -> str:
    """``summary.json`` ``stop_reason`` in words (:data:`STOP_REASON_WORDS`); an unknown one as
    ``stopped: <reason>``."""
    return STOP_REASON_WORDS.get(str(reason), f"stopped: {reason}")

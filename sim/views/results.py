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

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml


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
        d = yaml.safe_load((self.run_dir / "scenario.yaml").read_text())
        d.pop("_meta", None)
        return d

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    @cached_property
    def rounds(self) -> pd.DataFrame:
        return pd.read_parquet(self.run_dir / "rounds.parquet")

    @cached_property
    def device_rounds(self) -> pd.DataFrame:
        return pd.read_parquet(self.run_dir / "device_rounds.parquet")

    @cached_property
    def evals(self) -> pd.DataFrame | None:
        p = self.run_dir / "evals.parquet"
        return pd.read_parquet(p) if p.is_file() else None

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
    spec = json.loads((d / "sweep.json").read_text())
    return SweepData(d, spec, pd.read_parquet(d / "sweep.parquet"))


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

"""Sweep files: a base scenario, a ``matrix`` of dotted keys with value lists, and ``seeds``.

    base: ../quick.yaml                      # scenario file, relative to the sweep file
    name: sucb-sensitivity                   # default: the sweep file's name
    set: {training.rounds: 30}               # fixed overrides for every cell (optional)
    matrix:
      algorithm.params.discount: [0.8, 0.9, 0.95]
      algorithm.params.exploration: [0.5, 1, 2]
    seeds: [1, 2, 3]

The cells are the cartesian product of the matrix values (in the order the keys are written, the
last key varying fastest) times the seeds, and, when the base scenario has ``policies:``, times its
policy labels (each cell then runs one policy, exactly like a child run of a comparison). Every cell
is a full scenario, validated like a file (an error names the cell's values), and identified by the
sha256 of its resolved scenario (:func:`sim.loader.scenario_digest`), so a cell's directory name
changes exactly when what it computes changes.

Cells with real learning and no ``learning.torch_threads`` get ``torch_threads: 1``, written into
their scenario: a cell's numbers then do not depend on how many cells share the machine (fp32
reductions can differ in the last bits between thread counts), and ``fedfleet run`` on a cell's
``scenario.yaml`` reproduces it exactly.

This module expands and validates; :mod:`sim.studies.sweep_run` runs the cells.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim.loader import (
    ScenarioError,
    apply_override,
    check_structure,
    read_yaml,
    scenario_digest,
    validate,
)
from devices.errors import excerpt
from sim.scenario import NAME_RE, Scenario
from sim.studies.policies import policy_scenarios

MAX_CELLS = 100_000


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str = Field(description="scenario file, relative to the sweep file")
    name: str | None = Field(None, description="sweep directory name: letters, digits, '.', '_', '-' (no path)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value for every cell")
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0])

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not NAME_RE.fullmatch(v) or v in (".", "..")):
            raise ValueError(f"{excerpt(v)} must match {NAME_RE.pattern} (letters, digits, '.', '_', '-'; "
                             "no path separators)")
        return v


@dataclass(frozen=True)
class SweepCell:
    index: int
    values: dict[str, Any]  # the matrix values of this cell
    seed: int
    scenario: Scenario
    digest: str
    policy: str  # the policy label (base with policies:) or the algorithm name
    labelled: bool = False  # True when the label comes from the base scenario's policies

    @property
    def cell_id(self) -> str:
        core = f"seed{self.seed}-{self.digest[:12]}"
        return f"{self.policy}-{core}" if self.labelled else core


def load_sweep_file(path: str | Path) -> tuple[SweepSpec, list[SweepCell]]:
    """Read a sweep file safely, validate it, and expand every cell."""
    p = Path(path)
    data = read_yaml(p)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        allowed = " (allowed keys: base, name, set, matrix, seeds)" if first["type"] == "extra_forbidden" else ""
        raise ScenarioError(f"{p}: invalid sweep\n{loc}: {first['msg'].removeprefix('Value error, ')}{allowed}") from None
    if spec.name is None:  # the file stem, reduced to what NAME_RE allows
        stem = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in p.stem)[:100]
        spec.name = stem if NAME_RE.fullmatch(stem) else "sweep"
    return spec, expand(spec, p.resolve().parent)


def expand(spec: SweepSpec, sweep_dir: Path) -> list[SweepCell]:
    """Every (matrix values, seed) cell as a validated scenario."""
    base_path = Path(spec.base) if Path(spec.base).is_absolute() else sweep_dir / spec.base
    base_data = read_yaml(base_path)
    for key, value in spec.set.items():
        _assign(base_data, key, value, "set")
    keys = list(spec.matrix)
    n = len(spec.seeds)
    for k in keys:
        n *= len(spec.matrix[k])
    if n > MAX_CELLS:
        raise ScenarioError(f"sweep {spec.name}: {n} cells exceed the limit of {MAX_CELLS}")
    cells: list[SweepCell] = []
    for i, (combo, seed) in enumerate(itertools.product(itertools.product(*(spec.matrix[k] for k in keys)),
                                                        spec.seeds)):
        data = copy.deepcopy(base_data)
        values = dict(zip(keys, combo))
        for k, v in values.items():
            _assign(data, k, v, "matrix")
        data["seed"] = seed
        if data.get("name") is None:
            data["name"] = spec.name
        check_structure(data, str(base_path))
        where = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "no matrix"
        sc = validate(data, f"{spec.name} cell {i} ({where}, seed {seed})", base_path.parent)
        children = policy_scenarios(sc) if sc.policies else {sc.algorithm.name: sc}
        for label, child in children.items():
            child = _pin_threads(child)
            cells.append(SweepCell(len(cells), values, seed, child, scenario_digest(child), label,
                                   labelled=bool(sc.policies)))
    if len(cells) > MAX_CELLS:
        raise ScenarioError(f"sweep {spec.name}: {len(cells)} cells exceed the limit of {MAX_CELLS}")
    return cells


def _pin_threads(sc: Scenario) -> Scenario:
    if sc.learning.kind == "real" and sc.learning.torch_threads is None:
        return sc.model_copy(update={"learning": sc.learning.model_copy(update={"torch_threads": 1})})
    return sc


def _assign(data: dict, key: str, value: Any, section: str) -> None:
    try:
        apply_override(data, f"{key}={json.dumps(value)}")
    except ScenarioError as e:
        raise ScenarioError(f"sweep {section}.{key}: {e}") from None

"""Sweep files: matrix x seeds expansion, validation with the cell named, stable cell ids."""

from __future__ import annotations

import pytest
import yaml
from fleet_helpers import base_scenario

from sim.loader import ScenarioError
from sim.studies.sweep import load_sweep_file as load_sweep


def write(tmp_path, sweep: dict, base: dict | None = None):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base or base_scenario()))
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}))
    return p


def test_cartesian_product_times_seeds_in_order(tmp_path):
    p = write(tmp_path, {"matrix": {"algorithm.params.rank": [4, 8], "training.local_steps": [5, 10, 20]},
                         "seeds": [1, 2], "set": {"training.rounds": 3}})
    spec, cells = load_sweep(p)
    assert spec.name == "s" and len(cells) == 2 * 3 * 2
    assert [(c.values["algorithm.params.rank"], c.values["training.local_steps"], c.seed) for c in cells[:4]] == [
        (4, 5, 1), (4, 5, 2), (4, 10, 1), (4, 10, 2)]
    c = cells[5]
    assert c.scenario.algorithm.params["rank"] == 4 and c.scenario.training.local_steps == 20
    assert c.scenario.seed == 2 and c.scenario.training.rounds == 3
    assert len({c.cell_id for c in cells}) == len(cells)
    _, again = load_sweep(p)
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]  # ids depend only on the resolved scenario


def test_bad_cell_names_its_values(tmp_path):
    p = write(tmp_path, {"matrix": {"algorithm.params.rank": [4, -1]}})
    with pytest.raises(ScenarioError, match=r"(?s)cell 1 \(algorithm\.params\.rank=-1, seed 0\).*algorithm\.params\.rank"):
        load_sweep(p)


def test_bad_sweep_file(tmp_path):
    p = write(tmp_path, {"matrix": {"training.rounds": []}})
    with pytest.raises(ScenarioError, match=r"invalid sweep\nmatrix\.training\.rounds"):
        load_sweep(p)
    p = write(tmp_path, {"seeds": [1], "oops": 1})
    with pytest.raises(ScenarioError, match=r"oops.*allowed keys"):
        load_sweep(p)
    p = write(tmp_path, {"matrix": {"fleet.groups.7.count": [1]}})
    with pytest.raises(ScenarioError, match=r"sweep matrix\.fleet\.groups\.7\.count"):
        load_sweep(p)

"""`fedfleet calibrate` and the named calibrations a scenario selects with `fleet.calibration`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from devices.measurements import SHIPPED_CSV
from devices.named_calibrations import named_calibration
from sim.cli import app
from sim.fleet import build_fleet
from sim.loader import load_scenario, resolved_dict

REPO = Path(__file__).resolve().parents[2]
PAPERLIKE = REPO / "scenarios" / "paper-fleet-80-paperlike.yaml"
runner = CliRunner()


def test_check_prints_every_board_before_and_after():
    res = runner.invoke(app, ["calibrate", "--check"])
    assert res.exit_code == 0, res.output
    assert "median_before" in res.output and "worst_after" in res.output
    for board in ("tx2", "xavier_nx", "agx_xavier", "agx_orin_64gb"):
        assert board in res.output


def _tx2_rows(tmp_path: Path) -> Path:
    """A user's own file: the shipped TX2 training rows only."""
    with open(SHIPPED_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r["board"] == "tx2" and r["phase"] == "train"]
    assert keep
    out = tmp_path / "mine.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return out


def test_fit_writes_a_block_a_scenario_accepts(tmp_path):
    out = tmp_path / "cal.yaml"
    res = runner.invoke(app, ["calibrate", str(_tx2_rows(tmp_path)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    block = yaml.safe_load(out.read_text())["boards"]["tx2"]["fp32"]
    assert block["speed_factor"] == pytest.approx(named_calibration("measured", "tx2")["speed_factor"], rel=1e-5)
    sc, _ = load_scenario(PAPERLIKE, [f"fleet.groups.0.calibration={block}"])
    assert sc.fleet.groups[0].calibration.speed_factor == block["speed_factor"]


def test_bad_measurement_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,board\nx,not_a_board\n")
    res = runner.invoke(app, ["calibrate", str(bad)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_check_and_a_file_together_are_refused(tmp_path):
    res = runner.invoke(app, ["calibrate", str(_tx2_rows(tmp_path)), "--check"])
    assert res.exit_code == 2


def _tx2_speed(overrides: list[str]) -> float:
    sc, base = load_scenario(PAPERLIKE, overrides)
    return build_fleet(sc, base).profiles[0].speed_factor


def test_measured_calibration_reaches_the_fleet_and_a_group_key_overrides_it():
    assert _tx2_speed([]) == 1.0
    assert _tx2_speed(["fleet.calibration=measured"]) == named_calibration("measured", "tx2")["speed_factor"]
    assert _tx2_speed(["fleet.calibration=measured", "fleet.groups.0.calibration.speed_factor=2.0"]) == 2.0
    sc, base = load_scenario(PAPERLIKE, ["fleet.calibration=paper"])
    nx = build_fleet(sc, base).profiles[1]
    assert nx.efficiency == 0.0346  # the scenario sets it too; the paper calibration agrees


def test_datasheet_default_leaves_the_resolved_scenario_unchanged():
    sc, _ = load_scenario(PAPERLIKE, [])
    assert "calibration" not in resolved_dict(sc)["fleet"]
    sc, _ = load_scenario(PAPERLIKE, ["fleet.calibration=measured"])
    assert resolved_dict(sc)["fleet"]["calibration"] == "measured"


def test_unknown_calibration_names_the_allowed_ones():
    res = runner.invoke(app, ["validate", str(PAPERLIKE), "--set", "fleet.calibration=lab"])
    assert res.exit_code == 2
    assert "fleet.calibration" in res.output and "measured" in res.output

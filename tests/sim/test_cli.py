"""The ``fedfleet`` commands on good input: devices, validate, schema, strategies, profile, run.

Most checks use the in-process ``typer.testing.CliRunner`` on ``sim.cli.app``; the run of the
quickstart and a few exit-status checks use the real executable in a subprocess.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from devices.catalog import load_catalog
from fleet_helpers import fedfleet

from sim.cli import app

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"

runner = CliRunner()


def invoke(*args: str):
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output
    return res


CATALOG = load_catalog()
ALL_MODES = {(t.type, m.name) for t in CATALOG.values() for m in t.modes}
CSV_HEADER = ["type", "mode", "default", "cpus", "cpu_ghz", "gpu_sms", "gpu_mhz", "fp32_tflops", "fp16_tflops",
              "fp16_path", "mem_bw_gbps", "ram_gib", "source"]


def _table_pairs(output: str) -> set[tuple[str, str]]:
    """(type, mode) of every body row of a rich table (cells split on the box character)."""
    pairs = set()
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] and cells[2]:
            pairs.add((cells[1], cells[2]))
    return pairs


def _csv_rows(output: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(output))
    assert reader.fieldnames == CSV_HEADER
    return list(reader)


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------

def test_catalog_size() -> None:
    assert len(CATALOG) == 11
    assert len(ALL_MODES) == 43


def test_devices_table_lists_every_type_and_mode() -> None:
    res = invoke("devices")
    assert res.exit_code == 0, res.output
    pairs = _table_pairs(res.stdout)
    for must in [("tx2", "MAXN"), ("agx_xavier", "MODE_30W_ALL"), ("agx_orin_64gb", "MODE_50W"),
                 ("xavier_nx", "15W_6CORE"), ("orin_nano_8gb_super", "MAXN_SUPER"), ("nano", "5W")]:
        assert must in pairs, must
    assert ALL_MODES <= pairs


def test_devices_csv_parses_with_43_rows() -> None:
    res = invoke("devices", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = _csv_rows(res.stdout)
    assert len(rows) == 43
    assert {(r["type"], r["mode"]) for r in rows} == ALL_MODES
    assert len({(r["type"], r["mode"]) for r in rows}) == 43, "duplicate rows"
    for r in rows:
        for col in ("cpus", "cpu_ghz", "gpu_sms", "gpu_mhz", "fp32_tflops", "fp16_tflops", "mem_bw_gbps", "ram_gib"):
            assert float(r[col]) > 0, (r["type"], r["mode"], col)
        assert r["fp16_path"] in ("tensor", "half2")
        assert r["default"] in ("", "*")
        assert r["source"]
    for t in CATALOG:  # the star marks the catalog's default mode (the Nano's is missing:
        # known catalog bug, xfailed in tests/devices/test_catalog.py::test_exactly_one_default_mode)
        starred = {r["mode"] for r in rows if r["type"] == t and r["default"] == "*"}
        assert starred == {m.name for m in CATALOG[t].modes if m.is_default}, t
        assert len(starred) <= 1, t
    by = {(r["type"], r["mode"]): r for r in rows}
    assert by[("tx2", "MAXN")]["fp16_path"] == "half2"  # Pascal: no tensor cores
    assert by[("agx_orin_64gb", "MODE_50W")]["fp16_path"] == "tensor"
    assert float(by[("agx_orin_64gb", "MAXN")]["fp32_tflops"]) > float(by[("tx2", "MAXN")]["fp32_tflops"])


def test_devices_type_filter() -> None:
    res = invoke("devices", "--type", "tx2", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = _csv_rows(res.stdout)
    assert {r["type"] for r in rows} == {"tx2"}
    assert {r["mode"] for r in rows} == set(CATALOG["tx2"].mode_names)
    assert len(rows) == 5
    table = invoke("devices", "--type", "agx_orin_64gb")
    assert table.exit_code == 0
    assert _table_pairs(table.stdout) == {("agx_orin_64gb", m) for m in CATALOG["agx_orin_64gb"].mode_names}


@pytest.mark.parametrize("args, expect", [
    (["--type", "tx3"], ["unknown device type 'tx3'", "allowed", "tx2", "agx_orin_64gb"]),
    (["--format", "json"], ["--format 'json'", "table, csv"]),
])
def test_devices_bad_option_exits_2(args: list[str], expect: list[str]) -> None:
    res = invoke("devices", *args)
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    for s in expect:
        assert s in res.stderr, res.stderr


def test_devices_real_cli() -> None:
    ok = fedfleet("devices", "--format", "csv", "--type", "agx_xavier")
    assert ok.returncode == 0, ok.stderr
    assert len(_csv_rows(ok.stdout)) == len(CATALOG["agx_xavier"].modes)
    bad = fedfleet("devices", "--type", "tx3")
    assert bad.returncode == 2
    assert "unknown device type 'tx3'" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------------
# validate, schema, strategies, profile
# ---------------------------------------------------------------------------------------------

def test_validate_paper_fleet() -> None:
    res = invoke("validate", str(SCENARIOS / "paper-fleet-80.yaml"))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert out.startswith("ok: paper-fleet-80:")
    assert "80 devices" in out
    assert "30 tx2" in out and "40 xavier_nx" in out and "10 agx_xavier" in out
    assert "roberta-base" in out and "algorithm fixed" in out


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    res = invoke("validate", str(path))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ok: ")


def test_validate_quickstart_with_override() -> None:
    res = invoke("validate", str(SCENARIOS / "quickstart.yaml"), "--set", "training.rounds=3")
    assert res.exit_code == 0, res.output
    assert "12 devices" in res.stdout and "3 rounds" in res.stdout and "round policy deadline" in res.stdout


def test_schema_lists_keys() -> None:
    res = invoke("schema")
    assert res.exit_code == 0, res.output
    keys = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert len(keys) == len(set(keys)), "duplicate keys"
    for k in ("name", "seed", "fleet.groups", "fleet.groups[].type", "fleet.groups[].count",
              "fleet.groups[].power_modes", "fleet.groups[].placement", "fleet.groups[].calibration.efficiency",
              "network.rtt_ms", "dynamics.power_mode.kind", "workload.model", "workload.seq_len",
              "training.rounds", "round.policy", "round.deadline_s", "round.deadline_factor", "round.k",
              "algorithm.name", "algorithm.params", "output.dir", "output.run_name"):
        assert k in keys, k
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    assert "required" in lines["fleet.groups[].type"]
    assert "required" in lines["fleet.groups[].count"]
    assert "'fixed'" in lines["algorithm.name"]


def test_strategies_lists_fixed_and_random() -> None:
    res = invoke("strategies")
    assert res.exit_code == 0, res.output
    names = [line.split(":")[0] for line in res.stdout.splitlines() if line and not line.startswith(" ")]
    assert "fixed" in names and "random" in names
    assert "    rank = 8" in res.stdout
    assert "    prune_ratios = " in res.stdout


def test_profile_quickstart() -> None:
    res = invoke("profile", str(SCENARIOS / "quickstart.yaml"))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "quickstart" in out and "roberta-base" in out
    pairs = _table_pairs(out)
    expected = {(g, m) for g in ("tx2", "xavier_nx", "agx_xavier") for m in CATALOG[g].mode_names}
    assert expected <= pairs, expected - pairs


def test_profile_bad_scenario_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("fleet:\n  groups:\n    - {type: tx3, count: 1}\n")
    res = invoke("profile", str(p))
    assert res.exit_code == 2
    assert "fleet.groups[0].type" in res.stderr and "'tx3'" in res.stderr


# ---------------------------------------------------------------------------------------------
# run (real executable)
# ---------------------------------------------------------------------------------------------

def test_run_quickstart_writes_a_complete_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = fedfleet("run", "scenarios/quickstart.yaml", "--set", "training.rounds=3", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # --quiet: only the run directory
    run_dir = Path(lines[0])
    assert run_dir.is_dir()
    assert run_dir.resolve().parent == (out / "quickstart").resolve()
    assert run_dir.name.startswith("seed0-")

    names = {p.name for p in run_dir.iterdir()}
    assert {"scenario.yaml", "rounds.parquet", "device_rounds.parquet", "summary.json", "status.json",
            "plots"} <= names
    assert not [n for n in names if n.endswith(".tmp")], names  # atomic writes leave no temp files

    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    assert status["finished_unix"] >= status["started_unix"]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scenario"] == "quickstart"
    assert summary["rounds_completed"] == 3
    assert summary["n_devices"] == 12
    assert summary["run_id"] == run_dir.name

    resolved = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    assert resolved["training"]["rounds"] == 3  # the override is recorded
    assert resolved["seed"] == 0
    assert resolved["round"]["policy"] == "deadline"
    assert "_meta" in resolved and resolved["_meta"]["digest"]

    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    assert len(rounds) == 3
    dev = pd.read_parquet(run_dir / "device_rounds.parquet")
    assert len(dev) > 0

    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {"round_times.png", "device_types.png", "timeline.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


TWO_POLICIES = ["--set", "learning.kind=none", "--set", "training.rounds=3", "--set", "output.plots=false",
                "--set", "policies={spine: {name: fedspine}, lora: {name: fedlora, params: {rank: 8}}}"]


def test_run_policies_in_parallel_then_resume_a_broken_comparison(tmp_path: Path) -> None:
    proc = fedfleet("run", "scenarios/compare-quick.yaml", *TWO_POLICIES, "--out", str(tmp_path), "--workers", "2",
                    "-q")
    assert proc.returncode == 0, proc.stderr
    parent = Path(proc.stdout.splitlines()[0])
    assert {p.name for p in parent.iterdir()} == {"scenario.yaml", "status.json", "compare.md", "compare.csv",
                                                 "spine", "lora"}
    table = (parent / "compare.md").read_text()
    assert "| spine | fedspine |" in table and "| lora | fedlora |" in table
    first = (parent / "lora" / "rounds.parquet").read_bytes()
    (parent / "lora" / "status.json").write_text('{"status": "running"}')  # as if killed mid-run
    status = json.loads((parent / "status.json").read_text())
    (parent / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    kept = (parent / "spine" / "summary.json").stat().st_mtime_ns
    proc = fedfleet("run", "--resume", str(parent), "-q")
    assert proc.returncode == 0, proc.stderr
    assert (parent / "spine" / "summary.json").stat().st_mtime_ns == kept  # finished: not rerun
    assert (parent / "lora" / "rounds.parquet").read_bytes() == first
    assert json.loads((parent / "status.json").read_text())["status"] == "finished"
    again = fedfleet("run", "--resume", str(parent))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_workers_are_for_policies_only() -> None:
    res = invoke("run", str(SCENARIOS / "quickstart.yaml"), "--workers", "2")
    assert res.exit_code == 2 and "policies" in res.output


def test_real_cli_help_and_unknown_command() -> None:
    ok = fedfleet("--help")
    assert ok.returncode == 0
    for cmd in ("validate", "run", "devices", "profile", "schema", "strategies"):
        assert cmd in ok.stdout
    bad = fedfleet("frobnicate")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr

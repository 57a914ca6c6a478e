"""Comparisons: ``policies:`` runs every policy on the same fleet and seed, as cells (any executor, resumable);
``fedfleet compare`` tabulates."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from fleet_helpers import base_scenario, fedfleet

import sim
from sim.loader import ScenarioError, validate
from sim.studies.executors import LocalExecutor
from sim.studies.policies import run_policies
from sim.views.compare import compare_table, expand_runs, format_table


def comparison(tmp_path) -> dict:
    d = base_scenario(name="cmp")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "placement": "lan"},
                            {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN"]}]
    d["training"] = {"rounds": 4, "local_steps": 5}
    d["policies"] = {"spine": {"name": "fedspine", "params": {"prune_target": 0.3}},
                     "apt": {"name": "fedapt", "params": {"prune_target": 0.3}},
                     "lora": {"name": "fedlora"}}
    d["output"]["dir"] = str(tmp_path)
    return d


def test_policies_run_side_by_side_and_the_table_matches_each_summary(tmp_path):
    sc = validate(comparison(tmp_path))
    res = run_policies(sc)
    parent, table = res.parent, res.table
    assert res.failures == {}
    assert list(table["policy"]) == ["spine", "apt", "lora"]
    for row in table.itertuples(index=False):
        s = json.loads((parent / row.policy / "summary.json").read_text())
        assert row.algorithm == s["algorithm"]
        assert row.mean_idle_fraction == s["mean_idle_fraction"]
        assert row.mean_idle_fastest == s["mean_idle_fastest"] > row.mean_idle_fraction
        assert row.bytes_total == s["bytes_up_total"] + s["bytes_down_total"]
        assert row.final_sparsity == s["final_mean_prune_ratio"]
        assert row.sim_time_s == s["sim_time_s"]
        assert s["run_id"] == row.policy  # computed in a temporary directory, named as its final one
        child = yaml.safe_load((parent / row.policy / "scenario.yaml").read_text())
        assert "policies" not in child and child["fleet"] == yaml.safe_load(
            (parent / "scenario.yaml").read_text())["fleet"]
    assert (parent / "compare.md").is_file() and (parent / "compare.csv").is_file()
    assert json.loads((parent / "status.json").read_text())["status"] == "finished"
    # the same fleet and dynamics: every policy sees the same devices, modes and bandwidth draws
    dr = {p: pd.read_parquet(parent / p / "device_rounds.parquet") for p in ["spine", "apt", "lora"]}
    for p in ["apt", "lora"]:
        assert dr[p]["power_mode"].equals(dr["spine"]["power_mode"])
        assert dr[p]["bw_up_mbps"].equals(dr["spine"]["bw_up_mbps"])
    # timing only: no accuracy, so no time to target
    assert table["time_to_target_s"].isna().all() and table.attrs["target_accuracy"] is None
    assert expand_runs([parent]) == sorted(parent / p for p in ["apt", "lora", "spine"])


def test_time_to_target_reads_the_rounds(tmp_path):
    for name, accs in {"a": [0.5, 0.6, 0.7], "b": [0.55, 0.65, 0.66]}.items():
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame({"round": [0, 1, 2], "t_end_s": [10.0, 20.0, 30.0], "accuracy": accs}).to_parquet(d / "rounds.parquet")
        (d / "summary.json").write_text(json.dumps({"algorithm": name, "final_accuracy": accs[-1],
                                                    "mean_idle_fraction": 0.1, "bytes_up_total": 1,
                                                    "bytes_down_total": 2, "final_mean_prune_ratio": 0.3,
                                                    "rounds_completed": 3, "sim_time_s": 30.0,
                                                    "host": {"host_time_s": 1.0}}))
    t = compare_table([tmp_path / "a", tmp_path / "b"])
    assert t.attrs["target_accuracy"] == pytest.approx(0.66)  # the highest accuracy both reached
    assert list(t["time_to_target_s"]) == [30.0, 30.0]
    t = compare_table([tmp_path / "a", tmp_path / "b"], 0.6)
    assert list(t["time_to_target_s"]) == [20.0, 20.0]
    t = compare_table([tmp_path / "a", tmp_path / "b"], 0.69)
    assert t["time_to_target_s"].iloc[0] == 30.0 and math.isnan(t["time_to_target_s"].iloc[1])
    assert "target accuracy 69.0%" in format_table(t, "text") and format_table(t, "md").startswith("| policy")
    assert format_table(t, "csv").splitlines()[0].startswith("policy,algorithm,final_accuracy")


def test_cli_compare_and_bad_inputs(tmp_path):
    parent = run_policies(validate(comparison(tmp_path))).parent
    r = fedfleet("compare", str(parent), "--format", "md")
    assert r.returncode == 0, r.stderr
    assert "| spine | fedspine |" in r.stdout
    r = fedfleet("compare", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr
    r = fedfleet("compare", str(parent), "--format", "xml")
    assert r.returncode == 2 and "allowed: text, md, csv" in r.stderr


def idle_run(d, **summary) -> None:
    """A run directory with a summary holding ``summary`` (and no accuracy)."""
    d.mkdir()
    pd.DataFrame({"round": [0], "t_end_s": [10.0]}).to_parquet(d / "rounds.parquet")
    (d / "summary.json").write_text(json.dumps({"algorithm": "fedapt", "bytes_up_total": 0, "bytes_down_total": 0,
                                                "rounds_completed": 1, "sim_time_s": 10.0, **summary}))


def test_the_fastest_device_idle_stands_beside_the_mean_idle(tmp_path):
    idle_run(tmp_path / "new", mean_idle_fastest=0.306, mean_idle_fraction=0.121)
    idle_run(tmp_path / "old", mean_idle_fraction=0.2)  # written before mean_idle_fastest existed
    t = compare_table([tmp_path / "new", tmp_path / "old"])
    cols = list(t.columns)
    assert cols.index("mean_idle_fastest") + 1 == cols.index("mean_idle_fraction")
    assert t["mean_idle_fastest"].iloc[0] == 0.306 and math.isnan(t["mean_idle_fastest"].iloc[1])
    md = [[c.strip() for c in ln.strip("|").split("|")] for ln in format_table(t, "md").splitlines()[:4]]
    assert md[0][5:7] == ["fastest idle %", "mean idle %"]
    assert md[2][5:7] == ["30.6", "12.1"] and md[3][5:7] == ["-", "20.0"]
    assert format_table(t, "csv").splitlines()[0].split(",")[4:6] == ["mean_idle_fastest", "mean_idle_fraction"]
    idle_run(tmp_path / "bad", mean_idle_fastest="0.3")
    with pytest.raises(ValueError, match=r"summary\.json: mean_idle_fastest = '0\.3'; allowed: a number or null"):
        compare_table([tmp_path / "bad"])


def test_bad_policies_name_the_key(tmp_path):
    d = comparison(tmp_path)
    d["policies"]["apt"]["params"]["rank"] = 0
    with pytest.raises(ScenarioError, match=r"policies\.apt\.params\.rank"):
        validate(d)
    d = comparison(tmp_path)
    d["policies"]["x"] = {"name": "nope"}
    with pytest.raises(ScenarioError, match=r"policies\.x\.name: unknown strategy 'nope'"):
        validate(d)
    d = comparison(tmp_path)
    d["policies"] = {"../up": {"name": "fedlora"}}
    with pytest.raises(ScenarioError, match=r"policy label"):
        validate(d)


def test_latex_format_escapes_and_keeps_the_numbers(tmp_path):
    res = run_policies(validate(comparison(tmp_path)))
    parent, table = res.parent, res.table
    r = fedfleet("compare", str(parent), "--format", "latex")
    assert r.returncode == 0, r.stderr
    tex = r.stdout
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and tex.rstrip().endswith("\\end{table}")
    assert "final acc \\%" in tex and "mean idle \\%" in tex and "_" not in tex.replace("\\_", "")
    for row in table.itertuples(index=False):
        s = json.loads((parent / row.policy / "summary.json").read_text())
        line = next(x for x in tex.splitlines() if x.startswith(row.policy + " & "))
        cells = [c.strip().removesuffix("\\\\").strip() for c in line.split("&")]
        assert cells[5] == f"{100 * s['mean_idle_fastest']:.1f}"
        assert cells[6] == f"{100 * s['mean_idle_fraction']:.1f}"
        assert cells[7] == f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f}"
        assert cells[9] == str(s["rounds_completed"])
    r = fedfleet("compare", str(parent), "--format", "html")
    assert r.returncode == 2 and "allowed: text, md, csv, latex" in r.stderr


def test_latex_escape():
    from sim.views.compare import latex_escape

    assert latex_escape("a_b & 50% {x} #1 $ ~^\\") == \
        "a\\_b \\& 50\\% \\{x\\} \\#1 \\$ \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"


def _children(parent) -> dict[str, bytes]:
    """Every result file of a comparison's children, by path, host-time fields aside."""
    out = {}
    for f in sorted(parent.glob("*/*.parquet")):
        out[str(f.relative_to(parent))] = f.read_bytes()
    for f in sorted(parent.glob("*/summary.json")):
        s = json.loads(f.read_text())
        s.pop("host")
        out[str(f.relative_to(parent))] = json.dumps(s, sort_keys=True).encode()
    return out


def test_a_process_pool_gives_the_serial_results_and_a_resume_keeps_finished_policies(tmp_path):
    d = comparison(tmp_path)
    serial = run_policies(validate(d), out_root=tmp_path / "serial")
    pooled = run_policies(validate(d), out_root=tmp_path / "pool", executor=LocalExecutor(2))
    assert pooled.failures == {} and _children(pooled.parent) == _children(serial.parent)
    assert (pooled.parent / "compare.csv").read_text().splitlines()[0] == \
        (serial.parent / "compare.csv").read_text().splitlines()[0]
    # an interrupted comparison: one child gone, one never finished; a resume runs exactly those
    import shutil  # noqa: PLC0415

    shutil.rmtree(serial.parent / "apt")
    (serial.parent / "lora" / "status.json").write_text(json.dumps({"status": "running"}))
    kept = (serial.parent / "spine" / "summary.json").stat().st_mtime_ns
    resumed = run_policies(validate(d), parent=serial.parent)
    assert resumed.failures == {} and list(resumed.table["policy"]) == ["spine", "apt", "lora"]
    assert (serial.parent / "spine" / "summary.json").stat().st_mtime_ns == kept
    assert _children(resumed.parent) == _children(pooled.parent)
    assert json.loads((serial.parent / "status.json").read_text())["resumed"] is True


def test_a_failing_policy_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    import sim.studies.policies as policies  # noqa: PLC0415

    real = policies.policy_scenarios

    def one_broken(sc):  # the lora child names a model that does not exist: its run fails when it starts
        out = real(sc)
        out["lora"] = out["lora"].model_copy(update={"workload": out["lora"].workload.model_copy(update={"model": "nope"})})
        return out

    monkeypatch.setattr(policies, "policy_scenarios", one_broken)
    res = run_policies(validate(comparison(tmp_path)))
    assert set(res.failures) == {"lora"} and list(res.table["policy"]) == ["spine", "apt"]
    status = json.loads((res.parent / "status.json").read_text())
    assert status["status"] == "failed" and status["failures"] == res.failures
    assert (res.parent / "lora" / "traceback.txt").is_file()


def test_sim_run_runs_the_policies_and_returns_the_comparison(tmp_path):
    res = sim.run(comparison(tmp_path))
    assert list(res.table["policy"]) == ["spine", "apt", "lora"] and res.failures == {}
    assert (res.parent / "compare.md").is_file() and res.parent.parent.name == "cmp"

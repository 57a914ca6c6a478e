"""``fedfleet plot`` and ``fedfleet report`` from the command line, on a comparison and a sweep."""

from __future__ import annotations

import yaml
from fleet_helpers import base_scenario, fedfleet


def test_plot_and_report_a_comparison_and_a_sweep(tmp_path):
    d = base_scenario(name="cmp")
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "placement": "lan"},
                            {"type": "xavier_nx", "count": 2, "placement": "lan"}]
    d["training"] = {"rounds": 3, "local_steps": 5}
    d["policies"] = {"fedspine": {"name": "fedspine", "params": {"prune_target": 0.3}},
                     "fedlora": {"name": "fedlora"}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    r = fedfleet("run", str(tmp_path / "cmp.yaml"), "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    parent = tmp_path / "out" / "cmp" / r.stdout.splitlines()[0].rsplit("/", 1)[-1]
    r = fedfleet("plot", str(parent), "--round", "1")
    assert r.returncode == 0, r.stderr
    stems = {p.stem for p in (parent / "figures").glob("*.png")}
    assert {"progress_vs_time", "time_to_finish", "device_type_times", "heatmap_fedspine", "timeline_fedspine",
            "bytes", "memory"} <= stems
    assert all((parent / "figures" / f"{s}.pdf").stat().st_size > 1000 for s in stems)
    r = fedfleet("report", str(parent))
    assert r.returncode == 0, r.stderr
    page = (parent / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= len(stems)

    sweep = {"base": "cmp.yaml", "name": "sw", "set": {"training.rounds": 2},
             "matrix": {"algorithm.params.prune_target": [0.2, 0.4]}, "seeds": [0, 1]}
    del d["policies"]
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(sweep))
    r = fedfleet("sweep", str(tmp_path / "sw.yaml"), "--out", str(tmp_path / "out"), "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    r = fedfleet("plot", str(tmp_path / "out" / "sw"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "sw" / "figures" / "sweep_sim_time_s.png").stat().st_size > 10_000
    r = fedfleet("report", str(tmp_path / "out" / "sw"))
    assert r.returncode == 0 and (tmp_path / "out" / "sw" / "report.html").is_file()


def test_plot_refuses_what_is_not_a_result(tmp_path):
    r = fedfleet("plot", str(tmp_path))
    assert r.returncode == 2 and "not a run, comparison or sweep directory" in r.stderr
    assert "Traceback" not in r.stderr
    r = fedfleet("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr

"""Running sweeps: same index on every backend and worker count, resume after SIGKILL, failed cells
recorded while the others go on, Ctrl-C stops cleanly, the Python API reads it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml
from fleet_helpers import REPO, _fedfleet_cmd, base_scenario, cli_env, fedfleet

import sim
from sim.studies.cells import METRICS
from sim.studies.executors import LocalExecutor, SerialExecutor, make_executor
from sim.studies.sweep import load_sweep_file
from sim.studies.sweep_run import run_sweep


def sweep_file(tmp_path, rounds: int = 4, seeds=(1, 2), n_dev: int = 6, extra: dict | None = None):
    base = base_scenario(name="base")
    base["fleet"]["groups"] = [{"type": "tx2", "count": n_dev // 2, "placement": "lan"},
                               {"type": "xavier_nx", "count": n_dev - n_dev // 2, "placement": "lan"}]
    base["dynamics"]["power_mode"] = {"kind": "periodic", "every_rounds": 2, "initial": "random"}
    base["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.3}
    base["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3}}
    base["training"] = {"rounds": rounds, "local_steps": 5}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"base": "base.yaml", "name": "sw", "matrix": {"algorithm.params.discount": [0.8, 0.95],
                                                          "algorithm.params.exploration": [0.5, 2]},
            "seeds": list(seeds), **(extra or {})}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def metrics(df: pd.DataFrame) -> pd.DataFrame:
    return df[["cell_index", "policy", "algorithm.params.discount", "algorithm.params.exploration", "seed", "cell_id",
               "status", *METRICS]]


def test_local_pool_serial_and_ray_give_identical_indexes(tmp_path):
    p = sweep_file(tmp_path)
    spec, cells = load_sweep_file(p)
    assert len(cells) == 8
    serial = run_sweep(spec, cells, tmp_path / "serial", SerialExecutor(), base_dir=tmp_path)
    pool = run_sweep(spec, cells, tmp_path / "pool", LocalExecutor(2), base_dir=tmp_path)
    pytest.importorskip("ray")
    ray_dir = run_sweep(spec, cells, tmp_path / "ray", make_executor("ray", 2), base_dir=tmp_path)
    a, b, c = (pd.read_parquet(d / "sweep.parquet") for d in (serial, pool, ray_dir))
    assert (a["status"] == "finished").all() and a["sim_time_s"].notna().all()
    pd.testing.assert_frame_equal(metrics(a), metrics(b))
    pd.testing.assert_frame_equal(metrics(a), metrics(c))
    # every matrix value actually reached the cell's scenario
    for r in a.itertuples(index=False):
        sc = yaml.safe_load((serial / "cells" / r.cell_id / "scenario.yaml").read_text())
        assert sc["algorithm"]["params"]["discount"] == r[2] and sc["seed"] == r.seed
    # and the cells differ: the swept parameter changes the bandit's choices
    assert a["sim_time_s"].nunique() > 1
    assert (a.fillna(-1) == b.fillna(-1)).all().all()  # the whole file, not only the metrics


def test_killed_sweep_resumes_without_recomputing_and_matches(tmp_path):
    p = sweep_file(tmp_path, rounds=40, n_dev=20, seeds=(1, 2, 3))
    proc = subprocess.Popen([*_fedfleet_cmd(), "sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "2",
                             "-q"], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    idx = tmp_path / "out" / "sw" / "sweep.parquet"
    deadline = time.time() + 120
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        if idx.is_file():
            try:
                finished = int((pd.read_parquet(idx)["status"] == "finished").sum())
            except Exception:  # noqa: BLE001 - being replaced
                finished = 0
            if finished >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed; make the cells longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    part = pd.read_parquet(idx)
    done = part.loc[part["status"] == "finished", "cell_id"].tolist()
    assert 3 <= len(done) < 12 and set(part["status"]) <= {"finished", "pending"}
    time.sleep(0.5)  # the spawned workers die with their parent (PR_SET_PDEATHSIG)
    # a worker may have renamed one more finished cell into place after the index's last write: the
    # resume counts cell directories, not index rows
    on_disk = [c.name for c in (tmp_path / "out" / "sw" / "cells").iterdir()
               if (c / "status.json").is_file() and '"finished"' in (c / "status.json").read_text()]
    assert set(done) <= set(on_disk) and len(on_disk) <= len(done) + 2
    stamps = {c: os.stat(tmp_path / "out" / "sw" / "cells" / c / "summary.json").st_mtime_ns for c in on_disk}

    r = fedfleet("sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "2", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"({len(on_disk)} from an earlier run)" in r.stdout
    for c, t in stamps.items():  # finished cells were not recomputed
        assert os.stat(tmp_path / "out" / "sw" / "cells" / c / "summary.json").st_mtime_ns == t
    assert not list((tmp_path / "out" / "sw" / "cells").glob(".*"))  # no leftover temporary cells

    spec, cells = load_sweep_file(p)
    clean = run_sweep(spec, cells, tmp_path / "clean", SerialExecutor(), base_dir=tmp_path)
    a = pd.read_parquet(clean / "sweep.parquet")
    b = pd.read_parquet(idx)
    pd.testing.assert_frame_equal(a, b)


def test_a_failing_cell_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import sim.runner

    real = sim.runner.run_scenario

    def flaky(sc, *a, **k):
        if sc.seed == 2 and sc.algorithm.params["discount"] == 0.95:
            raise RuntimeError("boom <in cell>")
        return real(sc, *a, **k)

    monkeypatch.setattr(sim.runner, "run_scenario", flaky)
    p = sweep_file(tmp_path, rounds=2)
    spec, cells = load_sweep_file(p)
    d = run_sweep(spec, cells, tmp_path / "out", SerialExecutor(), base_dir=tmp_path)
    df = pd.read_parquet(d / "sweep.parquet")
    bad = df[df["status"] == "failed"]
    assert len(bad) == 2 and (bad["seed"] == 2).all() and (bad["algorithm.params.discount"] == 0.95).all()
    assert (bad["error"] == "RuntimeError: boom <in cell>").all() and bad["sim_time_s"].isna().all()
    assert (df.loc[df["status"] != "failed", "status"] == "finished").all()
    for cid in bad["cell_id"]:
        tb = (d / "cells" / cid / "traceback.txt").read_text()
        assert "boom <in cell>" in tb and "Traceback" in tb
    st = json.loads((d / "status.json").read_text())
    assert st["status"] == "failed" and st["failed"] == 2 and st["finished"] == 6
    # a rerun retries only the failed cells (now passing)
    monkeypatch.setattr(sim.runner, "run_scenario", real)
    stamps = {c: os.stat(d / "cells" / c / "summary.json").st_mtime_ns for c in df.loc[df["status"] == "finished",
                                                                                          "cell_id"]}
    run_sweep(spec, cells, tmp_path / "out", SerialExecutor(), base_dir=tmp_path)
    df2 = pd.read_parquet(d / "sweep.parquet")
    assert (df2["status"] == "finished").all()
    assert all(os.stat(d / "cells" / c / "summary.json").st_mtime_ns == t for c, t in stamps.items())


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path):
    p = sweep_file(tmp_path, rounds=40, n_dev=20, seeds=(1, 2, 3))
    proc = subprocess.Popen([*_fedfleet_cmd(), "sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "2",
                             "-q"], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    idx = tmp_path / "out" / "sw" / "sweep.parquet"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if idx.is_file() and (pd.read_parquet(idx)["status"] == "finished").sum() >= 1:
                break
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    st = json.loads((tmp_path / "out" / "sw" / "status.json").read_text())
    assert st["status"] == "interrupted" and st["finished"] >= 1
    r = fedfleet("sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "2", timeout=300)
    assert r.returncode == 0, r.stderr
    assert (pd.read_parquet(idx)["status"] == "finished").all()


def test_policies_in_the_base_become_a_dimension_and_the_api_reads_it_back(tmp_path):
    p = sweep_file(tmp_path, rounds=2, seeds=(1,), extra={"matrix": {"training.local_steps": [5, 10]}})
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["policies"] = {"spine": {"name": "fedspine", "params": {"prune_target": 0.3}},
                        "apt": {"name": "fedapt", "params": {"prune_target": 0.3}}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    spec, cells = load_sweep_file(p)
    assert [(c.values["training.local_steps"], c.policy) for c in cells] == [(5, "spine"), (5, "apt"), (10, "spine"),
                                                                            (10, "apt")]
    assert all(c.cell_id.startswith(c.policy + "-seed1-") for c in cells)
    d = run_sweep(spec, cells, tmp_path / "out", SerialExecutor(), base_dir=tmp_path)
    sw = sim.load_sweep(d)
    assert list(sw.index["policy"]) == ["spine", "apt", "spine", "apt"]
    runs = sw.runs()
    assert [(r.policy, r.values["training.local_steps"]) for r in runs] == [("spine", 5), ("apt", 5), ("spine", 10),
                                                                           ("apt", 10)]
    assert runs[1].scenario["algorithm"]["name"] == "fedapt" and "policies" not in runs[1].scenario
    assert runs[0].summary["sim_time_s"] == sw.index["sim_time_s"].iloc[0]
    assert len(runs[0].rounds) == 2 and len(runs[0].device_rounds) == 12
    one = sim.load_run(runs[2].run_dir)
    assert one.policy == "fedspine" and one.seed == 1
    assert one.rounds.equals(runs[2].rounds)


def test_real_learning_cells_pin_torch_threads(tmp_path):
    p = sweep_file(tmp_path, rounds=2, seeds=(1,), extra={"set": {"learning.kind": "real"},
                                                          "matrix": {"training.local_steps": [5]}})
    _, cells = load_sweep_file(p)
    assert cells[0].scenario.learning.torch_threads == 1
    p = sweep_file(tmp_path, rounds=2, seeds=(1,), extra={"matrix": {"training.local_steps": [5]}})
    _, cells = load_sweep_file(p)
    assert cells[0].scenario.learning.torch_threads is None  # timing-only: untouched


def test_cli_errors(tmp_path):
    p = sweep_file(tmp_path, rounds=2, seeds=(1,))
    r = fedfleet("sweep", str(p), "--backend", "dask")
    assert r.returncode == 2 and "allowed: local, ray" in r.stderr and "Traceback" not in r.stderr
    r = fedfleet("sweep", str(p), "--workers", "0")
    assert r.returncode == 2 and "--workers 0" in r.stderr
    r = fedfleet("sweep", str(p), "--address", "1.2.3.4:6379")
    assert r.returncode == 2 and "only for --backend ray" in r.stderr
    r = fedfleet("sweep", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_incomplete_finished_cells_are_recomputed_and_the_log_says_so(tmp_path, caplog):
    """A cell whose status says finished is counted only when every file is present and readable; the
    others are repaired by the rerun (and only they are recomputed)."""
    p = sweep_file(tmp_path, rounds=3)
    spec, cells = load_sweep_file(p)
    d = run_sweep(spec, cells, tmp_path / "out", SerialExecutor(), base_dir=tmp_path)
    clean = pd.read_parquet(d / "sweep.parquet")
    ids = list(clean["cell_id"])
    cd = [d / "cells" / c for c in ids]
    (cd[0] / "scenario.yaml").unlink()
    (cd[1] / "rounds.parquet").write_bytes((cd[1] / "rounds.parquet").read_bytes()[:200])  # truncated
    pd.read_parquet(cd[2] / "device_rounds.parquet").head(3).to_parquet(cd[2] / "device_rounds.parquet")
    (cd[3] / "summary.json").write_text('{"rounds_completed": ')
    (cd[4] / "status.json").unlink()
    os.mkfifo(cd[4] / "status.json")  # must not hang the rerun
    (cd[5] / "device_rounds.parquet").unlink()
    (cd[5] / "device_rounds.parquet").symlink_to(cd[6] / "device_rounds.parquet")
    stamps = {c: os.stat(d / "cells" / c / "summary.json").st_mtime_ns for c in ids[6:]}
    with caplog.at_level("WARNING", logger="sim.studies.cells"):
        run_sweep(spec, cells, tmp_path / "out", SerialExecutor(), base_dir=tmp_path)
    why = {r.getMessage().split()[1]: r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()}
    assert set(why) == set(ids[:6])
    assert "scenario.yaml: missing" in why[ids[0]] and "rounds.parquet: not a readable parquet file" in why[ids[1]]
    assert "device_rounds.parquet: 3 rows, summary.json says device_rounds = 18" in why[ids[2]]
    assert "summary.json: not valid JSON" in why[ids[3]] and "status.json: not a regular file" in why[ids[4]]
    assert "device_rounds.parquet: not a regular file (a symbolic link)" in why[ids[5]]
    assert all("recomputing it" in m for m in why.values())
    st = json.loads((d / "status.json").read_text())
    assert st["status"] == "finished" and st["repaired_incomplete"] == 6 and st["skipped_already_finished"] == 2
    assert all(os.stat(d / "cells" / c / "summary.json").st_mtime_ns == t for c, t in stamps.items())
    pd.testing.assert_frame_equal(pd.read_parquet(d / "sweep.parquet"), clean)
    from sim.studies.cells import cell_state

    states = [cell_state(c) for c in cd]
    assert all(row is not None and row["status"] == "finished" and why == "" for row, why in states)
    assert not (cd[5] / "device_rounds.parquet").is_symlink()

"""Same scenario and seed -> byte-identical result files; another seed differs."""

from __future__ import annotations

import hashlib

from fleet_helpers import REPO

from sim.loader import load_scenario
from sim.runner import run_scenario

FILES = ("rounds.parquet", "device_rounds.parquet")


def _digests(run_dir):
    return {f: hashlib.sha256((run_dir / f).read_bytes()).hexdigest() for f in FILES}


def _run(tmp_path, seed):
    sets = ["training.rounds=25", f"seed={seed}", "dynamics.dropout.prob=0.1",
            "network.contention=per_class", "output.plots=false"]
    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", sets)
    return run_scenario(sc, base, tmp_path, progress=False).run_dir


def test_same_seed_identical_files_other_seed_differs(tmp_path):
    a = _run(tmp_path, 3)
    b = _run(tmp_path, 3)
    c = _run(tmp_path, 7)
    assert a != b  # two run directories (suffix -2)
    assert _digests(a) == _digests(b)
    da, dc = _digests(a), _digests(c)
    assert all(da[f] != dc[f] for f in FILES)
    assert (a / "scenario.yaml").read_text() == (b / "scenario.yaml").read_text()


def test_quickstart_deterministic_with_all_dynamics(tmp_path):
    sc, base = load_scenario(REPO / "scenarios" / "quickstart.yaml", ["output.plots=false"])
    a = run_scenario(sc, base, tmp_path, progress=False).run_dir
    b = run_scenario(sc, base, tmp_path, progress=False).run_dir
    assert _digests(a) == _digests(b)

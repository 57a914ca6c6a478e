"""The paper reproduction's assumptions (scenarios/paper/, benchmarks/paper_report.py).

The page takes the fixed-plan methods' paper-calibrated times from timing-only runs joined to their
datasheet learning runs. That is exact only if (a) a fixed plan's learning does not depend on the
calibration, and (b) a timing-only run gives the learning run's round times. Both are tested here on a
tiny version of scenarios/paper/learning.yaml; the page re-checks (b) on the real runs.
"""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest
import yaml
from fleet_helpers import REPO

from sim.loader import validate

sys.path.insert(0, str(REPO / "benchmarks"))


def tiny(calibrated: bool, kind: str = "real", algorithm: str = "fedapt") -> dict:
    name = "learning-calibrated.yaml" if calibrated else "learning.yaml"
    d = yaml.safe_load((REPO / "scenarios" / "paper" / name).read_text())
    d = copy.deepcopy(d)
    d["training"] = {"rounds": 3, "local_steps": 2, "eval_every": 1}
    d["algorithm"] = {"name": algorithm, "params": {"prune_target": 0.5}}
    d["learning"].update(kind=kind, model="tiny-bert", proxy_layers=1, train_examples=240, test_size=48,
                         torch_threads=1, eval={"examples": 48, "devices": 1})
    d["output"] = {"dir": "results"}
    return d


def run(d: dict):
    pytest.importorskip("torch")
    from sim.runner import simulate

    _, out = simulate(validate(d, "<t>", REPO / "scenarios" / "paper"), REPO / "scenarios" / "paper")
    return out


def test_fixed_plan_learning_is_calibration_free_and_timing_only_gives_its_round_times():
    data, cal = run(tiny(False)), run(tiny(True))
    # (a) the same learning under either calibration: accuracies, losses, plans
    np.testing.assert_array_equal(data.rounds["accuracy"].to_numpy(), cal.rounds["accuracy"].to_numpy())
    np.testing.assert_array_equal(data.rounds["test_loss"].to_numpy(), cal.rounds["test_loss"].to_numpy())
    np.testing.assert_array_equal(data.device_rounds["loss_after"].to_numpy(), cal.device_rounds["loss_after"].to_numpy())
    # the calibration slows the Xavier boards only: the idle time moves (the round's end is set by a TX2)
    assert not np.array_equal(data.rounds["mean_idle_fraction"].to_numpy(), cal.rounds["mean_idle_fraction"].to_numpy())
    # (b) timing-only reproduces the learning run's round times
    timing = run(tiny(False, kind="none"))
    np.testing.assert_array_equal(timing.rounds["t_end_s"].to_numpy(), data.rounds["t_end_s"].to_numpy())
    assert data.rounds["accuracy"].notna().all()


def test_the_bandit_is_not_calibration_free():
    """FedSpine reads simulated times, so its plans (and so its learning) may move with the calibration;
    this is why sparsity-calibrated.yaml runs it with real learning."""
    da, db = tiny(False, kind="none", algorithm="fedspine"), tiny(True, kind="none", algorithm="fedspine")
    for d in (da, db):
        d["training"]["rounds"] = 30  # past the bandit's first, deterministic pulls of untried arms
    a, b = run(da), run(db)
    pa = a.device_rounds[["prune_ratio", "lora_rank"]].to_numpy()
    pb = b.device_rounds[["prune_ratio", "lora_rank"]].to_numpy()
    assert not np.array_equal(pa, pb)


def test_report_statistics_and_verdicts():
    from paper_report import fmt, mean_std, verdict_gain, verdict_speed

    m, s, n = mean_std([0.01, 0.02, math.nan])
    assert (round(m, 6), round(s, 6), n) == (0.015, 0.007071, 2)
    assert fmt([0.01, 0.03], 100, 1, " pp") == "2.0 ± 1.4 pp"
    assert fmt([0.01, math.nan], 100, 1) == "1.0 ± 0.0 (n=1)"
    assert fmt([]) == "n/a"
    assert verdict_gain([0.006, 0.01, 0.02], 0.4) == "holds"
    assert verdict_gain([0.03, -0.001, 0.02], 0.4) == "direction only"
    assert verdict_gain([0.001, 0.002, 0.001], 0.4) == "direction only"
    assert verdict_gain([-0.01, 0.0, 0.005], 0.4) == "does not hold"
    assert verdict_gain([], 0.4) == "not run"
    assert verdict_speed([1.5, 2.0, 1.6], 1.4) == "holds"
    assert verdict_speed([1.2, 1.1, 1.3], 1.4) == "direction only"
    assert verdict_speed([0.9, 1.0, 0.95], 1.4) == "does not hold"


def test_every_paper_sweep_is_run_by_make_paper():
    from paper import SWEEPS

    files = {p.stem for p in (REPO / "scenarios" / "paper").glob("*.yaml")} - {"learning", "learning-calibrated"}
    assert set(SWEEPS) == files
    assert "paper:" in (REPO / "Makefile").read_text()


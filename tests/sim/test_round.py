"""sim/round.py and sim/round_policy.py: round policies, the round object, plain-data simulation state."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from fleet_helpers import REPO, base_scenario

from sim.engine import Simulation
from sim.loader import validate
from sim.records import STATUS_CODE, RoundBuffer
from sim.round_policy import Deadline, FirstK, WaitForAll, censored_median, round_policy
from sim.scenario import RoundSpec


def test_policies_select_and_cut_as_the_scenario_says():
    assert isinstance(round_policy(RoundSpec()), WaitForAll)
    first = round_policy(RoundSpec(policy="first_k", k=4, over_selection=1.3))
    assert isinstance(first, FirstK) and first.n_selected(10) == 6 and first.n_selected(3) == 3
    assert first.reports_needed == 4 and first.cut_status == STATUS_CODE["cancelled"]
    assert math.isnan(first.deadline_s())
    half = WaitForAll(0.5)
    assert half.n_selected(7) == 4 and half.n_selected(1) == 1 and half.reports_needed is None
    fixed = round_policy(RoundSpec(policy="deadline", deadline_s=30.0))
    assert fixed.deadline_s() == 30.0 and fixed.cut_status == STATUS_CODE["late"]
    rng = np.random.default_rng(0)
    picked = WaitForAll(0.5).select(np.arange(10), rng)
    assert len(picked) == 5 and np.all(np.diff(picked) > 0)


def _buffer(times: list[float], statuses: list[str]) -> RoundBuffer:
    n = len(times)
    buf = RoundBuffer(0, 10.0, np.arange(n), [None] * n)
    buf.t_report_s[:] = np.array(times) + 10.0
    buf.status[:] = [STATUS_CODE[s] for s in statuses]
    return buf


def test_deadline_factor_follows_the_censored_median():
    pol = Deadline(1.0, None, 2.0)
    assert math.isnan(pol.deadline_s())  # the first round waits for every device
    pol.observe(_buffer([1.0, 3.0, 5.0], ["ok", "oom", "ok"]), math.nan)
    assert pol.deadline_s() == 6.0
    # half or more late: the median is unknown, the deadline itself is kept (then x factor)
    pol.observe(_buffer([1.0, np.nan, np.nan], ["ok", "late", "late"]), 6.0)
    assert pol.deadline_s() == 12.0
    restored = Deadline(1.0, None, 2.0)
    restored.set_state(pol.state())
    assert restored.deadline_s() == 12.0
    assert math.isnan(censored_median(_buffer([np.nan], ["dropped"]), math.nan))  # no device time at all


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, (str, int, tuple)) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return x is None or isinstance(x, (str, int, float, bool, np.ndarray, np.generic))


def test_simulation_state_is_plain_data_and_restores_exactly():
    d = base_scenario()
    d["dynamics"]["dropout"] = {"prob": 0.2}
    d["network"]["contention"] = "shared"
    d["round"] = {"policy": "deadline", "deadline_factor": 1.5}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3}}
    d["faults"] = {"crash_prob": 0.1, "straggler": {"prob": 0.2, "factor": 2.0, "rounds": 2}}
    d["training"]["rounds"] = 6
    sc = validate(d, "<t>", REPO)
    saved = {}

    def keep(sim: Simulation, next_round: int) -> None:
        if next_round == 3:
            saved["state"] = sim.state()

    full = Simulation(sc, REPO, checkpoint=keep).run()
    assert _plain(saved["state"])
    resumed = Simulation(sc, REPO)
    resumed.set_state(saved["state"])
    resumed.start_round = 3
    out = resumed.run()
    assert out.rounds.equals(full.rounds) and out.device_rounds.equals(full.device_rounds)


def test_learning_package_does_not_import_sim_or_torch_for_its_contract():
    code = ("import sys, learning.api, learning.config; "
            "assert not [m for m in sys.modules if m == 'sim' or m.startswith('sim.')], 'sim imported'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    out = subprocess.run(["grep", "-rn", "-E", r"^\s*(from|import) sim\b", "learning/"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.stdout == ""


@pytest.mark.parametrize("policy", [{"policy": "all"}, {"policy": "first_k", "k": 1}])
def test_policies_without_a_deadline_record_none(policy):
    d = base_scenario()
    d["round"] = policy
    d["training"]["rounds"] = 2
    out = Simulation(validate(d, "<t>", REPO), REPO).run()
    assert out.rounds["deadline_s"].isna().all()

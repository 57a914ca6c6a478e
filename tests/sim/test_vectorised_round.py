"""sim/round.py: the vectorised rounds (devices with known phase durations as a KnownCohort) give
the same result files, bit for bit, as the event path that runs every device as a process.

Random scenarios (a named stream per case): mixed fleets with ties (identical devices on one fixed
link) and without, every round policy (all, partial participation, fixed and factor deadlines,
first-k), with and without dropouts, availability windows, power-mode outages, faults (crashes,
lost uploads, departures, straggler spikes, partitions), contention and OOM plans.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fleet_helpers import REPO, base_scenario

from devices.completion import CompletionTimes
from devices.rng import generator
from sim.engine import Simulation
from sim.loader import validate
from sim.round import KnownCohort, Round, call_at

TYPES = ["tx2", "nano", "xavier_nx", "agx_xavier", "orin_nano_8gb"]
POLICIES = ["all", "partial", "deadline_fixed", "deadline_factor", "first_k"]


def random_scenario(case: int, policy: str) -> dict:
    """A small random scenario for ``case`` under round policy ``policy``."""
    rng = generator(case, "test.vectorised_round")
    d = base_scenario()
    d["seed"] = int(rng.integers(1000))
    ties = rng.random() < 0.35  # identical devices on one fixed-rate link: many equal finish times
    groups = []
    for i in range(int(rng.integers(1, 4))):
        groups.append({"type": str(rng.choice(TYPES)), "name": f"g{i}", "count": int(rng.integers(1, 9)),
                       "placement": "lan" if ties else {"near": 1, "far": 1}})
    d["fleet"] = {"groups": groups}
    if ties:
        d["network"]["classes"] = {"lan": {"mbps": [10, 10]}}
        d["dynamics"]["power_mode"] = {"kind": "fixed", "initial": "default"}
    else:
        d["network"]["classes"] = {"near": {"mbps": [20, 30]}, "far": {"mbps": [1, 5]}}
        d["network"]["fluctuation"] = {"phi": 0.7, "sigma_log": float(rng.choice([0.0, 0.3]))}
        d["dynamics"]["power_mode"] = {"kind": "periodic", "every_rounds": 2, "initial": "random",
                                       "switch_outage_s": float(rng.choice([0.0, 0.0, 30.0]))}
        d["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.3}
    d["network"]["contention"] = str(rng.choice(["none", "none", "none", "shared", "per_class"]))
    if rng.random() < 0.3:
        d["dynamics"]["dropout"] = {"prob": 0.2}
    if rng.random() < 0.15:
        d["dynamics"]["availability"] = {"kind": "periodic", "period_s": 3000.0, "on_fraction": 0.7}
    if rng.random() < 0.4:
        d["faults"] = {"crash_prob": 0.2, "lost_upload_prob": 0.1, "leave_prob": 0.02,
                       "straggler": {"prob": 0.2, "factor": 3.0, "rounds": 2}}
        if not ties:
            d["faults"]["partitions"] = [{"placement": "far", "start_s": 200.0, "end_s": 900.0}]
    d["workload"]["batch_size"] = int(rng.choice([16, 16, 96]))  # 96: OOM on the small boards
    d["training"] = {"rounds": 5, "local_steps": int(rng.choice([5, 20]))}
    d["algorithm"] = ({"name": "fedspine", "params": {"prune_target": 0.3}} if rng.random() < 0.5
                      else {"name": "fixed", "params": {"prune_target": 0.0, "rank": 8}})
    n = sum(g["count"] for g in groups)
    d["round"] = {"all": {"policy": "all"},
                  "partial": {"policy": "all", "participation": 0.6},
                  "deadline_fixed": {"policy": "deadline", "deadline_s": float(rng.choice([40.0, 150.0, 400.0]))},
                  "deadline_factor": {"policy": "deadline", "deadline_factor": float(rng.choice([0.9, 1.0, 1.3]))},
                  "first_k": {"policy": "first_k", "k": int(rng.integers(1, n + 1)),
                              "over_selection": float(rng.choice([1.0, 1.5]))}}[policy]
    return d


def parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def run_both(d: dict, monkeypatch) -> tuple:
    """The run's (rounds, device_rounds) parquet bytes on the vectorised and on the event path."""
    sc = validate(d, "<t>", REPO)
    out = {}
    for vectorise in (True, False):
        monkeypatch.setattr(Round, "vectorise", vectorise)
        res = Simulation(sc, REPO).run()
        out[vectorise] = (res.rounds, res.device_rounds, res.sim_time_s)
    return out[True], out[False]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", range(12))
def test_vectorised_and_event_paths_write_identical_files(case, policy, monkeypatch):
    vec, ev = run_both(random_scenario(case, policy), monkeypatch)
    assert vec[2] == ev[2]
    assert parquet_bytes(vec[0]) == parquet_bytes(ev[0])
    assert parquet_bytes(vec[1]) == parquet_bytes(ev[1])


def test_the_random_cases_reach_every_status_and_cut():
    """The cases above are worth comparing: together they produce every status a round can give."""
    import pandas as pd  # noqa: PLC0415

    seen = set()
    for case in range(12):
        for policy in POLICIES:
            res = Simulation(validate(random_scenario(case, policy), "<t>", REPO), REPO).run()
            seen |= set(pd.unique(res.device_rounds["status"].astype(str)))
    assert {"ok", "oom", "late", "cancelled", "dropped", "crashed", "lost", "left"} <= seen, seen


@pytest.mark.parametrize("policy", [{"policy": "all"}, {"policy": "first_k", "k": 3, "over_selection": 2.0},
                                    {"policy": "deadline", "deadline_s": 60.0}])
def test_a_round_of_known_devices_takes_a_few_events_not_several_per_device(policy, monkeypatch):
    """With every duration known the round's event count does not grow with the fleet."""
    counts = {}
    for n in (4, 64):
        d = base_scenario()
        d["fleet"]["groups"][0]["count"] = n
        d["network"]["classes"]["lan"]["mbps"] = [5, 40]
        d["round"] = policy
        d["training"]["rounds"] = 3
        sim = Simulation(validate(d, "<t>", REPO), REPO)
        steps = 0
        step = sim.env.step

        def counting_step():
            nonlocal steps
            steps += 1
            step()

        monkeypatch.setattr(sim.env, "step", counting_step)
        sim.run()
        counts[n] = steps
    assert counts[64] == counts[4] < 40


def test_ties_at_the_k_th_report_are_all_reports_on_both_paths(monkeypatch):
    """Identical devices finish at the same instant: every report at the k-th report's time counts
    (the event path processes all of them before the round resumes), so n_ok may exceed k."""
    d = base_scenario()
    d["fleet"]["groups"][0]["count"] = 6
    d["round"] = {"policy": "first_k", "k": 2, "over_selection": 3.0}
    vec, ev = run_both(d, monkeypatch)
    assert int(vec[0]["n_ok"].iloc[0]) == int(ev[0]["n_ok"].iloc[0]) == 6
    assert parquet_bytes(vec[1]) == parquet_bytes(ev[1])


def test_cohort_records_the_phases_reached_by_the_cut():
    """Cut at 112 s: device 0 reports then, device 1's training ends then, device 2 (OOM) reported at
    103 s, device 3's download ends then (a phase end at the cut counts as reached)."""
    times = CompletionTimes(step_s=np.ones(4), compute_s=np.full(4, 10.0),
                            download_s=np.array([1.0, 2.0, 3.0, 12.0]), upload_s=np.ones(4))
    fits = np.array([True, True, False, True])
    cohort = KnownCohort(np.arange(4), 100.0, times, fits, np.zeros(4, dtype=bool))
    assert cohort.counts(103.0) == (1, 0)  # the OOM device at 103
    assert cohort.counts(112.0) == (2, 1)
    from sim.records import STATUS_CODE, RoundBuffer  # noqa: PLC0415

    buf = RoundBuffer(0, 100.0, np.arange(4), [None] * 4)
    started = cohort.record(buf, 112.0, STATUS_CODE["late"], np.array([5, 6, 7, 8]), np.array([1, 2, 3, 4]))
    assert started.tolist() == [0, 1, 3]
    late = STATUS_CODE["late"]
    assert buf.status.tolist() == [STATUS_CODE["ok"], late, STATUS_CODE["oom"], late]
    assert buf.t_end_s.tolist() == [112.0, 112.0, 103.0, 112.0]
    assert buf.t_compute_end_s[1] == 112.0 and np.isnan(buf.t_upload_end_s[1]) and buf.bytes_up.tolist() == [1, 0, 0, 0]
    assert buf.bytes_down.tolist() == [5, 6, 7, 8] and np.isnan(buf.t_compute_start_s[2])
    assert buf.t_compute_start_s[3] == 112.0 and np.isnan(buf.compute_s[3])
    assert buf.t_report_s[2] == 103.0 and buf.t_report_s[0] == 112.0 and np.isnan(buf.t_report_s[3])


def test_a_phase_that_would_not_move_the_clock_goes_to_the_event_path():
    times = CompletionTimes(step_s=np.zeros(2), compute_s=np.array([0.0, 5.0]), download_s=np.array([1.0, 1.0]),
                            upload_s=np.array([1.0, 1e-30]))
    assert KnownCohort.advances(10.0, times, np.array([True, True])).tolist() == [False, False]
    assert KnownCohort.advances(10.0, times, np.array([False, False])).tolist() == [True, True]


def test_call_at_lands_on_the_exact_float():
    import simpy  # noqa: PLC0415

    env = simpy.Environment(initial_time=0.1)
    targets = [0.3, 1e6 + 0.7, 12345.678901234, 0.1 + 1e-9]
    seen: list = []
    for t in targets:
        call_at(env, t, lambda t=t: seen.append((env.now, t)))
    env.run()
    assert all(now == t for now, t in seen) and len(seen) == len(targets)


def test_call_at_reaches_a_time_no_single_float_delay_reaches():
    """From 17.134310607475076 no float d gives now + d == 60.96017785225731 (the sum rounds past it
    both ways); the call still lands there exactly (found by a real-learning run with first-k)."""
    import simpy  # noqa: PLC0415

    now, t = 17.134310607475076, 60.96017785225731
    d = t - now
    assert all(now + x != t for x in (np.nextafter(d, -1.0), d, np.nextafter(d, 100.0)))
    env = simpy.Environment(initial_time=now)
    seen: list = []
    call_at(env, t, lambda: seen.append(env.now))
    env.run()
    assert seen == [t]


@pytest.mark.parametrize("k", [3, 8, 12])
def test_first_k_with_processes_reporting_before_the_cohorts_k_th(k, monkeypatch):
    """Devices that switched power mode (an outage) run as processes beside the cohort; their reports
    move the moment the cohort's reports complete k earlier, and the round must end exactly there."""
    d = base_scenario()
    d["fleet"] = {"groups": [{"type": "xavier_nx", "count": 10, "placement": {"near": 1, "far": 1}},
                             {"type": "agx_xavier", "count": 10, "placement": {"near": 1, "far": 1}}]}
    d["network"]["classes"] = {"near": {"mbps": [20, 30]}, "far": {"mbps": [1, 5]}}
    d["dynamics"]["power_mode"] = {"kind": "periodic", "every_rounds": 1, "initial": "random", "switch_outage_s": 2.0}
    d["round"] = {"policy": "first_k", "k": k, "over_selection": 1.6}
    d["training"]["rounds"] = 6
    moved = []
    watch = Round._watch_kth

    def counting_watch(self):
        before = self._next_kth_s
        watch(self)
        moved.append(self._ok_count > 0 and self._next_kth_s != before)

    monkeypatch.setattr(Round, "_watch_kth", counting_watch)
    vec, ev = run_both(d, monkeypatch)
    assert any(moved)
    assert parquet_bytes(vec[0]) == parquet_bytes(ev[0]) and parquet_bytes(vec[1]) == parquet_bytes(ev[1])

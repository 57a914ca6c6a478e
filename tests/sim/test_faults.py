"""Injected faults (scenario key ``faults``): 30% crashes per round plus partitions on the paper's
80-device fleet and on a small real-learning run; every missing report is accounted for, with the
right status, and only reported work reaches the strategy and the aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_helpers import REPO, base_scenario, run_dict

from devices.faults import Faults
from sim.loader import ScenarioError, load_scenario, validate

FAILED = ("crashed", "lost", "partitioned", "left", "dropped", "late", "cancelled")


def paper_faults(policy: dict) -> tuple:
    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", [
        "training.rounds=30", "output.plots=false", "faults.crash_prob=0.3", "faults.lost_upload_prob=0.05",
        "faults.leave_prob=0.005", "faults.straggler.prob=0.05", "faults.straggler.factor=5",
        'faults.partitions=[{placement: "far", start_s: 300, end_s: 1000}, '
        '{placement: "near", start_s: 1200, end_s: 1300}]',
        *[f"round.{k}={v}" for k, v in policy.items()]])
    return sc, base


@pytest.mark.parametrize("policy", [{"policy": "all"}, {"policy": "deadline", "deadline_factor": 1.2},
                                    {"policy": "first_k", "k": 40}])
def test_paper_fleet_with_30pct_crashes_and_partitions_finishes_and_accounts_for_every_report(policy):
    from sim.runner import simulate

    sc, base = paper_faults(policy)
    assert sc.n_devices == 80
    sim, out = simulate(sc, base)  # verify() runs inside and raises on a broken invariant
    dev, rounds = out.device_rounds, out.rounds
    assert out.stop_reason == "rounds" and len(rounds) == 30
    status = dev["status"].astype(str)
    # every selected device is either credited (reported) or missing with a named reason
    assert set(status) <= {"ok", "oom", *FAILED}
    assert (dev["credited"] == (status == "ok")).all()
    n_crashed = (status == "crashed").sum()
    assert n_crashed > 0.15 * len(dev)  # about 30% are drawn to crash; some fail otherwise first
    assert (status == "partitioned").sum() > 0 and (status == "lost").sum() > 0
    # per round: the counters name exactly the missing reports
    for r in rounds.itertuples(index=False):
        rows = status[dev["round"] == r.round]
        for s in ("ok", *FAILED):
            assert getattr(r, f"n_{s}") == int((rows == s).sum())
        assert r.n_selected == len(rows)
    # partitioned transfers happen only for the partitioned classes, inside their windows
    part = dev[status == "partitioned"]
    assert set(part["placement"].astype(str)) <= {"far", "near"}
    t_fail = part["t_end_s"].to_numpy()
    in_far = (t_fail >= 300) & (t_fail < 1000)
    in_lan = (t_fail >= 1200) & (t_fail < 1300)
    assert np.all(np.where(part["placement"].astype(str) == "far", in_far, in_lan))
    # a lost upload was fully sent; a crashed device sent nothing complete
    assert dev.loc[status == "lost", "t_upload_end_s"].notna().all()
    assert dev.loc[status == "crashed", "t_report_s"].isna().all()
    # straggler spikes multiply the step time
    assert set(np.unique(dev["straggler_factor"])) == {1.0, 5.0}
    if policy["policy"] == "all":  # the round waits only for devices that are still alive
        for r in rounds.itertuples(index=False):
            ends = dev.loc[dev["round"] == r.round, "t_end_s"]
            assert r.t_end_s == pytest.approx(ends.max())


def test_crash_statuses_match_the_fault_draws():
    """Replaying the fault streams: a selected device drawn to crash is recorded crashed (or failed
    earlier for another named reason), never ok; one not drawn to crash is never crashed."""
    sc, base = paper_faults({"policy": "all"})
    from sim.fleet import build_fleet
    from sim.runner import simulate

    _, out = simulate(sc, base)
    fleet = build_fleet(sc, base)
    dev = out.device_rounds
    for r in range(len(out.rounds)):
        fleet.begin_round(r)
        rows = dev[dev["round"] == r]
        st = rows["status"].astype(str).to_numpy()
        drawn = fleet.faults.crashes[rows["device_index"].to_numpy()]
        assert not np.any(~drawn & (st == "crashed"))
        assert not np.any(drawn & (st == "ok"))


def test_faults_are_reproducible_and_absent_faults_change_nothing():
    from sim.runner import simulate

    sc, base = paper_faults({"policy": "all"})
    a, b = simulate(sc, base)[1], simulate(sc, base)[1]
    assert a.device_rounds.equals(b.device_rounds)
    plain, _ = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", ["training.rounds=5"])
    zero, _ = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", ["training.rounds=5", "faults.crash_prob=0"])
    p, z = simulate(plain, base)[1], simulate(zero, base)[1]
    assert p.device_rounds.equals(z.device_rounds)  # faults with nothing to inject draw nothing


def test_everyone_leaving_ends_the_run():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 5, "placement": "lan"}]
    d["faults"] = {"leave_prob": 0.9}
    d["training"] = {"rounds": 50, "local_steps": 5}
    _, out = run_dict(d)
    assert out.stop_reason == "fleet_empty"
    assert (out.device_rounds["status"] == "left").sum() == 5 or out.device_rounds.groupby("device_id").size().max() < 50


def test_bad_fault_keys_are_clear_errors():
    d = base_scenario()
    d["faults"] = {"partitions": [{"placement": "nowhere", "start_s": 0, "end_s": 5}]}
    with pytest.raises(ScenarioError, match=r"faults.partitions\[0\].placement: unknown class 'nowhere'; allowed: lan"):
        validate(d, "<t>", REPO)
    d["faults"] = {"partitions": [{"placement": "lan", "start_s": 5, "end_s": 5}]}
    with pytest.raises(ScenarioError, match="end_s"):
        validate(d, "<t>", REPO)
    d["faults"] = {"crash_prob": 1.0}
    with pytest.raises(ScenarioError, match="faults.crash_prob"):
        validate(d, "<t>", REPO)


def test_fault_streams_are_per_device():
    """A device's fault draws do not depend on the fleet's size (its own streams)."""
    spec = validate({**base_scenario(), "faults": {"crash_prob": 0.5, "straggler": {"prob": 0.3}}}, "<t>", REPO).faults
    small = Faults(spec, 3, 4, np.zeros(4, dtype=np.int64), ["lan"])
    big = Faults(spec, 3, 40, np.zeros(40, dtype=np.int64), ["lan"])
    for r in range(10):
        small.begin_round(r)
        big.begin_round(r)
        assert np.array_equal(small.crashes, big.crashes[:4])
        assert np.array_equal(small.step_factor, big.step_factor[:4])


def test_real_learning_run_with_crashes_and_partitions_aggregates_only_reports():
    pytest.importorskip("torch")
    from sim.runner import make_learner, simulate

    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "placement": "far"},
                            {"type": "agx_xavier", "count": 3, "placement": "lan"}]
    d["network"]["classes"]["far"] = {"mbps": [5, 5]}
    d["workload"].update(seq_len=32)
    d["training"] = {"rounds": 4, "local_steps": 2, "eval_every": 2}
    d["algorithm"] = {"name": "fedspine", "params": {"prune_target": 0.3, "batch_size": 8}}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 200, "test_size": 40,
                     "torch_threads": 1, "eval": {"examples": 40}}
    d["faults"] = {"crash_prob": 0.3, "lost_upload_prob": 0.1,
                   "partitions": [{"placement": "far", "start_s": 0, "end_s": 60}]}
    sc = validate(d, "<t>", REPO)
    learner = make_learner(sc, REPO)
    seen: list[list[int]] = []
    agg = learner.aggregate

    def spy(devices, updates, method, weights):
        seen.append(list(devices))
        return agg(devices, updates, method, weights)

    learner.aggregate = spy
    _, out = simulate(sc, REPO, learner=learner)
    dev = out.device_rounds
    status = dev["status"].astype(str)
    assert out.stop_reason == "rounds" and len(out.rounds) == 4
    assert (status != "ok").any() and (status == "ok").any()
    for r, devices in enumerate(seen):  # aggregated = exactly the devices whose report arrived
        ok = sorted(dev.loc[(dev["round"] == r) & (status == "ok"), "device_index"].tolist())
        assert sorted(devices) == ok
    assert out.rounds["accuracy"].notna().sum() == 2


def test_scenario_model_classes_have_unique_names():
    """Scenarios are pickled to sweep workers by class name: two models with one name break that."""
    import inspect
    import pickle

    from pydantic import BaseModel

    import sim.scenario as S

    for _, obj in inspect.getmembers(S, inspect.isclass):
        if issubclass(obj, BaseModel) and obj.__module__ == S.__name__:
            assert getattr(S, obj.__name__) is obj
    sc = validate({**base_scenario(), "faults": {"partitions": [{"placement": "lan", "start_s": 0, "end_s": 5}]}},
                  "<t>", REPO)
    assert pickle.loads(pickle.dumps(sc)) == sc

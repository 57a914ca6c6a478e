"""Property-based: random small fleets, dynamics, network, round policies and injected faults
(crashes, lost uploads, partitions, straggler spikes, devices leaving) always give runs that pass
verify(), credit only reported work, and are reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fleet_helpers import base_scenario, run_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TYPES = ["tx2", "nano", "xavier_nx", "agx_xavier", "orin_nano_8gb", "agx_orin_64gb"]


@st.composite
def scenarios(draw):
    d = base_scenario()
    groups = []
    for i in range(draw(st.integers(1, 3))):
        groups.append({"type": draw(st.sampled_from(TYPES)), "count": draw(st.integers(1, 6)), "name": f"g{i}",
                       "placement": draw(st.sampled_from(["a", "b", {"a": 1, "b": 2}]))})
    d["fleet"]["groups"] = groups
    d["seed"] = draw(st.integers(0, 2**32))
    d["network"] = {"classes": {"a": {"mbps": [1, 5]}, "b": {"mbps": [10, 30], "down_up_ratio": 2.0}},
                    "fluctuation": {"phi": draw(st.floats(0, 0.95)), "sigma_log": draw(st.floats(0, 1))},
                    "rtt_ms": draw(st.floats(0, 50)), "contention": draw(st.sampled_from(["none", "shared", "per_class"]))}
    d["dynamics"] = {
        "power_mode": {"kind": draw(st.sampled_from(["fixed", "periodic", "markov"])), "every_rounds": 2,
                       "switch_outage_s": draw(st.sampled_from([0.0, 5.0]))},
        "background_load": {"kind": "lognormal", "sigma": draw(st.floats(0, 1))},
        "dropout": {"prob": draw(st.sampled_from([0.0, 0.2, 0.6]))},
        "availability": draw(st.sampled_from([{"kind": "always"},
                                              {"kind": "periodic", "period_s": 300, "on_fraction": 0.6}])),
    }
    d["workload"] = {"model": draw(st.sampled_from(["roberta-base", "bert-base", "minilm-l6"])),
                     "batch_size": draw(st.sampled_from([8, 16, 64])), "seq_len": 128}
    n = sum(g["count"] for g in groups)
    pol = draw(st.sampled_from(["all", "deadline_s", "deadline_factor", "first_k"]))
    d["round"] = {"all": {"policy": "all", "participation": draw(st.sampled_from([0.5, 1.0]))},
                  "deadline_s": {"policy": "deadline", "deadline_s": draw(st.floats(5, 200))},
                  "deadline_factor": {"policy": "deadline", "deadline_factor": draw(st.floats(0.5, 2))},
                  "first_k": {"policy": "first_k", "k": draw(st.integers(1, n)), "over_selection": 1.5}}[pol]
    d["training"] = {"rounds": draw(st.integers(1, 6)), "local_steps": draw(st.integers(1, 30))}
    d["algorithm"] = draw(st.sampled_from([
        {"name": "fixed", "params": {"prune_target": 0.5, "rank": 8}},
        {"name": "random", "params": {"reach_target_by": 4}},
        {"name": "fedspine", "params": {"prune_target": 0.4}},
    ]))
    if draw(st.booleans()):
        prob = st.sampled_from([0.0, 0.1, 0.3, 0.7])
        parts = [{"placement": draw(st.sampled_from(["a", "b"])), "start_s": s, "end_s": s + draw(st.floats(1, 500))}
                 for s in draw(st.lists(st.floats(0, 1000), max_size=3))]
        d["faults"] = {"crash_prob": draw(prob), "lost_upload_prob": draw(prob), "leave_prob": draw(prob),
                       "straggler": {"prob": draw(prob), "factor": draw(st.floats(1, 20)), "rounds": draw(st.integers(1, 4))},
                       "partitions": parts}
    return d


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenarios())
def test_random_fleets_pass_verify_and_reproduce(d):
    _, out = run_dict(d)  # simulate() runs verify() and raises on any broken invariant
    dev, rounds = out.device_rounds, out.rounds
    assert len(rounds) >= 1
    credited = dev[dev["credited"]]
    # credit only for complete, reported work
    assert (credited["status"] == "ok").all()
    assert credited[["t_download_end_s", "t_compute_end_s", "t_upload_end_s", "t_report_s"]].notna().all().all()
    assert (credited["bytes_up"] > 0).all()
    not_ok = dev[dev["status"] != "ok"]
    assert (not_ok.loc[not_ok["status"] != "lost", "bytes_up"] == 0).all()  # a lost upload was sent, not received
    assert not_ok["t_report_s"].isna().all() or (not_ok["status"] == "oom").any()
    # a device that left the fleet is never selected again
    left = dev[dev["status"] == "left"].groupby("device_id", observed=True)["round"].min()
    for device, r in left.items():
        assert not ((dev["device_id"] == device) & (dev["round"] > r)).any()
    # every round's selected devices are distinct, and time only moves forward
    assert not dev.duplicated(["round", "device_id"]).any()
    assert np.all(np.diff(rounds["t_end_s"].to_numpy()) >= 0)
    _, again = run_dict(d)
    pd.testing.assert_frame_equal(dev, again.device_rounds, check_exact=True)

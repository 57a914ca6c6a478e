"""algorithms/mergesfl.py: feature merging and batch-size regulation on split rounds (timing only)."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_helpers import run_dict

from algorithms.capacity import proportional_batches
from tests.sim.test_split_round import SPLIT_CASES, assert_both_paths_identical, split_scenario
from tests.sim.test_vectorised_round import random_scenario


def test_regulation_cuts_the_per_step_wait_of_a_mixed_fleet():
    """mergesfl: per-device batches from observed step times shrink the barrier wait; the total batch is kept."""
    waits = {}
    for regulate in (False, True):
        d = split_scenario("mergesfl", regulate=regulate)
        d["fleet"] = {"groups": [{"type": "agx_xavier", "count": 3, "placement": "lan"},
                                 {"type": "tx2", "count": 3, "placement": "lan"}]}
        d["network"]["classes"]["lan"]["mbps"] = [100, 100]
        d["training"] = {"rounds": 6, "local_steps": 4}
        _, out = run_dict(d)
        last = out.device_rounds[out.device_rounds["round"] == 5]
        waits[regulate] = float(last["split_step_wait_s"].mean())
        assert int(last["batch_size"].sum()) == 6 * 16
    assert waits[True] < 0.5 * waits[False]


def test_proportional_batches_keep_the_total_and_follow_the_weights():
    b = proportional_batches(48, np.array([1.0, 2.0, 3.0]))
    assert b.tolist() == [8, 16, 24]
    b = proportional_batches(10, np.array([1.0, 1.0, 1.0]))
    assert b.sum() == 10 and b.tolist() == [4, 3, 3]


def test_without_regulation_every_device_keeps_the_run_batch_and_waits_at_the_barrier():
    d = split_scenario("mergesfl", regulate=False)
    d["fleet"] = {"groups": [{"type": "agx_xavier", "count": 2, "placement": "lan"},
                             {"type": "nano", "count": 2, "placement": "lan"}]}
    d["training"] = {"rounds": 2, "local_steps": 3}
    _, out = run_dict(d)
    dev = out.device_rounds
    assert (dev["batch_size"] == 16).all()
    fast = dev["device_type"] == "agx_xavier"
    assert (dev.loc[fast, "split_step_wait_s"] > 0).all() and (dev.loc[~fast, "split_step_wait_s"] == 0).all()
    # merged: every device's training ends with the slowest one's last step plus its own g + b
    assert dev.groupby("round")["compute_s"].agg(lambda c: c.max() - c.min()).max() < 1.0


@pytest.mark.parametrize(("case", "policy"), SPLIT_CASES)
def test_merged_rounds_on_the_vectorised_and_event_paths_write_identical_files(case, policy, monkeypatch):
    d = random_scenario(case, policy)
    d["algorithm"] = {"name": "mergesfl", "params": {"split_layers": 2}}
    assert_both_paths_identical(d, monkeypatch)


def test_a_killed_mergesfl_run_resumes_byte_identical(tmp_path):
    """The throughput estimates and batch caps are checkpointed: kill after round 4, resume, same files."""
    import yaml  # noqa: PLC0415

    from tests.sim.test_checkpoint import assert_same_results, fedfleet, kill_and_resume, run_dir_of, timing_scenario

    scen = timing_scenario(tmp_path, rounds=8)
    d = yaml.safe_load(scen.read_text())
    d["algorithm"] = {"name": "mergesfl", "params": {"split_layers": 2}}
    scen.write_text(yaml.safe_dump(d))
    ref = fedfleet("run", str(scen), "--out", str(tmp_path / "ref"), "-q")
    assert ref.returncode == 0, ref.stderr
    assert_same_results(run_dir_of(tmp_path / "ref"), kill_and_resume(scen, tmp_path / "kill", 4, "after_round"))

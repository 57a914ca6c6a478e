"""sim/split_round.py and devices/split_cost.py: split-learning rounds (splitfed, mergesfl), timing only."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_helpers import REPO, base_scenario, run_dict
from tests.sim.test_vectorised_round import parquet_bytes, random_scenario, run_both

from devices.plan import Plan
from sim.loader import ScenarioError, resolved_dict, validate
from sim.split_round import StepPhases, merged_steps


def split_scenario(name: str = "splitfed", **params) -> dict:
    d = base_scenario()
    d["algorithm"] = {"name": name, "params": {"split_layers": 3, **params}}
    return d


def test_one_device_one_step_is_forward_upload_server_download_backward_by_hand():
    """Must-show 1: one device, one step, dynamics off: the step is f + u + T + g + b, every term by hand."""
    d = split_scenario()
    d["training"] = {"rounds": 1, "local_steps": 1}
    d["server"] = {"peak_tflops": 50.0, "efficiency": 0.4}
    sim, out = run_dict(d)
    row = out.device_rounds.iloc[0]
    # roberta-base: L = 12 blocks, h = 768, FFN 3072, 12 heads, 2 labels; b = 16, s = 128, LoRA r = 8 on
    # query and value of every block; k = 3 blocks on the device; amp compute (16-bit activations)
    L, h, f, a, b, s, k = 12, 768, 3072, 12, 16, 128, 3
    f_lin = 2 * (4 * h * h) + 2 * 2 * h * f  # Q, K, V, O projections and the two FFN matrices, per token
    f_attn = 2 * 2 * s * h  # QK^T and AV
    f_lora = 2 * 8 * 2 * (h + h)  # two adapted (h x h) matrices at rank 8, per token and block
    dev_fwd = b * s * (k * (f_lin + f_attn) + k * f_lora)
    dev_bwd = b * s * (k * (f_lin + 2 * f_attn) + 2 * k * f_lora)  # LoRA down to block 0
    f_head = 2 * b * (h * h + h * 2)  # pooler dense + classifier, first token
    server = b * s * ((L - k) * (f_lin + f_attn) + (L - k) * (f_lin + 2 * f_attn) + 3 * (L - k) * f_lora) + 3 * f_head
    block_params = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    w_read = k * block_params * 4  # fp32 frozen weights (roberta-base < 1e9 parameters)
    act = k * (34 * s * b * h + 5 * a * s * s * b)  # Korthikanti et al.'s 16-bit activations per block
    mt, slot = sim.fleet.mode_table, int(sim.fleet.slots(np.array([0]))[0])

    def roofline(flops, moved, kernels):
        return max(flops / mt.eff_flops[slot], moved / mt.mem_bw[slot]) + kernels * mt.ovh_per_kernel_s[slot]

    feature_bytes = b * s * h * 2
    lat, eta = 2 * 5 / 1000, sim.link.efficiency
    up = lat + 8 * feature_bytes / 1e6 / eta / row["bw_up_mbps"]
    down = lat + 8 * feature_bytes / 1e6 / eta / row["bw_down_mbps"]
    t_server = server / (50e12 * 0.4)
    fwd, bwd = roofline(dev_fwd, w_read + act, 20 * k), roofline(dev_bwd, w_read + act, 40 * k)
    assert row["flops_per_step"] == dev_fwd + dev_bwd
    assert row["split_feature_bytes"] == feature_bytes
    assert row["split_server_step_s"] == pytest.approx(t_server, rel=1e-12)
    assert row["split_step_busy_s"] == pytest.approx(fwd + up + down + bwd, rel=1e-12)
    assert row["compute_s"] == pytest.approx(fwd + up + t_server + down + bwd, rel=1e-12)
    assert row["split_step_wait_s"] == 0.0
    assert row["t_report_s"] - row["t_upload_start_s"] == pytest.approx(
        lat + 8 * row["bytes_up"] / 1e6 / eta / row["bw_up_mbps"], rel=1e-9)


def test_merged_steps_meet_at_a_barrier_every_step():
    """Two devices, two merged steps, worked by hand: the fast one waits at each barrier."""
    ph = StepPhases(np.array([1.0, 3.0]), np.array([1.0, 1.0]), 0.5, np.array([1.0, 1.0]), np.array([1.0, 2.0]))
    compute, wait = merged_steps(ph, np.array([2, 2]), np.zeros(2))
    # step 1: arrivals 2, 4 -> barrier 4; next starts 6.5, 7.5. step 2: arrivals 8.5, 11.5 -> barrier 11.5
    assert compute.tolist() == [14.0, 15.0]
    assert wait.tolist() == [5.0, 0.0]
    compute, wait = merged_steps(ph, np.array([1, 2]), np.array([0.0, 0.0]))  # device 0 stops after one step
    assert compute.tolist() == [6.5, 4.0 + 0.5 + 1 + 2 + 3 + 1 + 0.5 + 1 + 2] and wait.tolist() == [2.0, 0.0]


def test_splitfed_gives_every_device_the_run_batch_and_never_waits_within_a_round():
    d = split_scenario()
    d["fleet"] = {"groups": [{"type": "agx_xavier", "count": 2, "placement": "lan"},
                             {"type": "nano", "count": 2, "placement": "lan"}]}
    d["training"] = {"rounds": 2, "local_steps": 3}
    _, out = run_dict(d)
    dev = out.device_rounds
    assert (dev["batch_size"] == 16).all() and (dev["split_step_wait_s"] == 0).all()
    assert (dev["split_layers"] == 3).all()
    assert np.allclose(dev["compute_s"], 3 * (dev["split_step_busy_s"] + dev["split_server_step_s"]), rtol=1e-12)


SPLIT_CASES = [(0, "all"), (7, "first_k"), (21, "deadline_factor"), (29, "deadline_fixed"), (32, "first_k"),
               (8, "partial")]
"""Random scenarios of tests/sim/test_vectorised_round.py that reach every status but oom and cancelled
under split plans (crashes, departures, lost uploads, partitions, dropouts, late devices, contention)."""


def assert_both_paths_identical(d: dict, monkeypatch) -> None:
    """The vectorised and the event path write the same result files for scenario ``d``."""
    vec, ev = run_both(d, monkeypatch)
    assert vec[2] == ev[2]
    assert parquet_bytes(vec[0]) == parquet_bytes(ev[0])
    assert parquet_bytes(vec[1]) == parquet_bytes(ev[1])


@pytest.mark.parametrize(("case", "policy"), SPLIT_CASES)
def test_split_rounds_on_the_vectorised_and_event_paths_write_identical_files(case, policy, monkeypatch):
    """Faults, dropouts, outages, contention and every round policy apply to split rounds as to any round."""
    d = random_scenario(case, policy)
    d["algorithm"] = {"name": "splitfed", "params": {"split_layers": 2}}
    assert_both_paths_identical(d, monkeypatch)


def test_bad_split_input_is_one_clear_line():
    d = split_scenario(split_layers=12)
    with pytest.raises(ScenarioError, match=r"algorithm.params.split_layers: 12 leaves no block on the server"):
        validate(d, "<t>", REPO)
    d = split_scenario()
    d["server"] = {"peak_tflops": 0}
    with pytest.raises(ScenarioError, match=r"server.peak_tflops"):
        validate(d, "<t>", REPO)
    with pytest.raises(ValueError, match="merge_features needs split_layers"):
        Plan(0.0, 8, None, 1, 16, merge_features=True)


def test_a_scenario_without_a_server_section_keeps_its_resolved_form():
    """The ``server`` key is left out of the resolved scenario (and the digest) unless given."""
    assert "server" not in resolved_dict(validate(base_scenario(), "<t>", REPO))
    d = split_scenario()
    d["server"] = {"peak_tflops": 20.0}
    assert resolved_dict(validate(d, "<t>", REPO))["server"] == {"peak_tflops": 20.0, "efficiency": 0.5}

"""The engine against closed forms: one device, two devices, policies, failures, contention."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleet_helpers import base_scenario, run_dict

# Independent closed form for RoBERTa-base (L12, h768, a12, f3072), LoRA on query+value, trained
# 2-class head, b=16, s=128, unpruned, LoRA on every layer (the cost model of docs/device-model.md):
L, H, F, S, B, R = 12, 768, 3072, 128, 16, 8
F_LIN = 2 * (4 * H * H) + 2 * 2 * H * F
F_ATTN = 2 * 2 * S * H
F_LORA = 2 * 2 * (H * R + R * H)
F_HEAD = 2 * B * (H * H + H * 2)
FLOPS_STEP = B * S * (L * (F_LIN + F_ATTN) + L * F_LORA) + F_HEAD \
    + B * S * (L * (F_LIN + 2 * F_ATTN) + 2 * L * F_LORA) + 2 * F_HEAD
LORA_PARAMS = L * 2 * R * (H + H)
HEAD_PARAMS = H * H + H + H * 2 + 2
MASK_BYTES = math.ceil(L * (12 + F) / 8)
BYTES_DOWN = 4 * (LORA_PARAMS + HEAD_PARAMS) + 1024
BYTES_UP = BYTES_DOWN + MASK_BYTES


def agx_maxn_step_s() -> float:
    """AGX Xavier MAXN, AMP: eta 0.20 x 8 SM x 1024 FLOP/clk x 1377 MHz; overhead 20(L+2L) kernels x 15 us x 2/2.266 GHz."""
    peak = 8 * 1024 * 1377e6
    t_comp = FLOPS_STEP / (0.20 * peak)
    t_ovh = 20 * (L + 2 * L) * 15e-6 * (2.0 / 2.266)
    return t_comp + t_ovh


def test_one_device_round_time_equals_closed_form():
    sim, out = run_dict(base_scenario())
    dev = out.device_rounds
    assert len(dev) == 1 and dev["status"].iloc[0] == "ok"
    # the step is compute-bound (memory term far smaller): check, then compare to the closed form
    c = sim.workload
    assert dev["flops_per_step"].iloc[0] == pytest.approx(FLOPS_STEP, rel=1e-12)
    step = agx_maxn_step_s()
    t_dn = 8 * BYTES_DOWN / 10e6 + 2 * 0.005
    t_up = 8 * BYTES_UP / 10e6 + 2 * 0.005
    expected = t_dn + 20 * step + t_up
    r = out.rounds.iloc[0]
    assert r["duration_s"] == pytest.approx(expected, rel=1e-9)
    assert dev["bytes_up"].iloc[0] == BYTES_UP and dev["bytes_down"].iloc[0] == BYTES_DOWN
    assert dev["step_time_s"].iloc[0] == pytest.approx(step, rel=1e-9)
    assert dev["t_download_end_s"].iloc[0] == pytest.approx(t_dn, rel=1e-9)
    assert dev["idle_s"].iloc[0] == 0.0
    assert c.arch.num_layers == L


def test_two_device_sync_round_ends_exactly_at_later_report():
    d = base_scenario()
    d["fleet"]["groups"] = [
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "lan"},
        {"type": "tx2", "count": 1, "power_modes": ["MAXQ"], "placement": "lan"},
    ]
    d["training"]["rounds"] = 3
    _, out = run_dict(d)
    dev = out.device_rounds
    for r, g in dev.groupby("round"):
        row = out.rounds[out.rounds["round"] == r].iloc[0]
        assert row["t_end_s"] == g["t_report_s"].max()  # exactly, not approximately
        fast = g[g["device_type"] == "agx_xavier"].iloc[0]
        slow = g[g["device_type"] == "tx2"].iloc[0]
        assert slow["idle_s"] == 0.0
        assert fast["idle_s"] == pytest.approx(slow["t_report_s"] - fast["t_report_s"], rel=1e-12)
        assert fast["idle_s"] > 0
    # rounds follow each other without gaps
    assert np.all(out.rounds["t_start_s"].to_numpy()[1:] == out.rounds["t_end_s"].to_numpy()[:-1])


def test_deadline_cuts_off_slow_devices():
    d = base_scenario()
    d["fleet"]["groups"] = [
        {"type": "agx_xavier", "count": 2, "power_modes": ["MAXN"], "placement": "lan"},
        {"type": "tx2", "count": 2, "power_modes": ["MAXQ"], "placement": "lan"},
    ]
    d["round"] = {"policy": "deadline", "deadline_s": 30.0}
    d["training"]["rounds"] = 2
    _, out = run_dict(d)
    dev = out.device_rounds
    assert set(dev.loc[dev["device_type"] == "tx2", "status"]) == {"late"}
    assert set(dev.loc[dev["device_type"] == "agx_xavier", "status"]) == {"ok"}
    assert np.allclose(out.rounds["duration_s"], 30.0)
    late = dev[dev["status"] == "late"]
    assert late["t_report_s"].isna().all() and (late["t_end_s"] == late["round_end_s"]).all()
    assert not late["credited"].any() and (late["bytes_up"] == 0).all()
    assert (out.rounds["n_late"] == 2).all()


def test_deadline_factor_uses_previous_round_median():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 6, "placement": "lan"}]
    d["dynamics"]["power_mode"] = {"kind": "markov", "stay_prob": 0.5}
    d["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.5}
    d["round"] = {"policy": "deadline", "deadline_factor": 1.1}
    d["training"]["rounds"] = 6
    _, out = run_dict(d)
    rounds, dev = out.rounds, out.device_rounds
    assert math.isnan(rounds["deadline_s"].iloc[0])
    for r in range(1, 6):
        prev = dev[dev["round"] == r - 1]
        t = np.where(prev["status"] == "ok", prev["t_report_s"] - prev["t_round_start_s"], np.inf)
        t = t[prev["status"].isin(["ok", "late"]).to_numpy()]
        med = float(np.median(t))
        if not math.isfinite(med):  # censored: half or more late -> previous deadline
            med = rounds["deadline_s"].iloc[r - 1]
        assert rounds["deadline_s"].iloc[r] == pytest.approx(1.1 * med, rel=1e-12)
    assert (dev["status"] == "late").any()


def test_first_k_closes_at_kth_report():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 10, "placement": "lan"}]
    d["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.4}
    d["round"] = {"policy": "first_k", "k": 4, "over_selection": 1.5}
    d["training"]["rounds"] = 3
    _, out = run_dict(d)
    for r, g in out.device_rounds.groupby("round"):
        assert len(g) == 6  # ceil(4 x 1.5)
        ok = g[g["status"] == "ok"]
        assert len(ok) == 4
        assert set(g["status"]) == {"ok", "cancelled"}
        assert out.rounds.loc[out.rounds["round"] == r, "t_end_s"].iloc[0] == ok["t_report_s"].max()


def test_dropouts_are_recorded_and_not_credited():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 20, "placement": "lan"}]
    d["dynamics"]["dropout"] = {"prob": 0.3}
    d["training"]["rounds"] = 5
    _, out = run_dict(d)
    dev = out.device_rounds
    dropped = dev[dev["status"] == "dropped"]
    assert 10 <= len(dropped) <= 50
    assert dropped["t_report_s"].isna().all() and not dropped["credited"].any()
    assert (dropped["t_end_s"] >= dropped["t_round_start_s"]).all()
    assert out.rounds["n_dropped"].sum() == len(dropped)


def test_plan_that_does_not_fit_gives_oom_report():
    d = base_scenario()
    d["fleet"]["groups"] = [
        {"type": "tx2", "count": 1, "placement": "lan", "power_modes": ["MAXN"]},
        {"type": "agx_xavier", "count": 1, "placement": "lan", "power_modes": ["MAXN"]},
    ]
    d["workload"] = {"model": "llama-7b", "batch_size": 1, "seq_len": 256, "task": "lm", "precision": "fp16"}
    _, out = run_dict(d)
    dev = out.device_rounds.set_index("device_type")
    assert dev.loc["tx2", "status"] == "oom" and dev.loc["agx_xavier", "status"] == "ok"
    assert dev.loc["tx2", "memory_peak_bytes"] > dev.loc["tx2", "memory_capacity_bytes"]
    assert dev.loc["tx2", "t_report_s"] == dev.loc["tx2", "t_download_end_s"]
    assert math.isnan(dev.loc["tx2", "t_compute_start_s"])


def test_shared_channel_gives_equal_throughput():
    """Two devices at link rates R1, R2 uploading together each get 1/(1/R1 + 1/R2) (802.11 anomaly)."""
    d = base_scenario()
    d["network"]["classes"] = {"a": {"mbps": [5, 5]}, "b": {"mbps": [20, 20]}}
    d["network"]["contention"] = "shared"
    d["network"]["rtt_ms"] = 0
    d["fleet"]["groups"] = [
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "a", "name": "slow"},
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "b", "name": "fast"},
    ]
    _, out = run_dict(d)
    dev = out.device_rounds.set_index("group")
    x = 1 / (1 / 5e6 + 1 / 20e6)  # bits/s each while both transfer
    # downloads start together and both move BYTES_DOWN at rate x
    assert dev.loc["slow", "t_download_end_s"] == pytest.approx(8 * BYTES_DOWN / x, rel=1e-9)
    assert dev.loc["fast", "t_download_end_s"] == pytest.approx(8 * BYTES_DOWN / x, rel=1e-9)
    # same hardware -> uploads start together too; both again share the channel
    up = dev["t_upload_end_s"] - dev["t_upload_start_s"]
    assert up["slow"] == pytest.approx(8 * BYTES_UP / x, rel=1e-9)
    assert up["fast"] == pytest.approx(8 * BYTES_UP / x, rel=1e-9)


def test_channel_speeds_up_when_a_flow_leaves():
    d = base_scenario()
    d["network"]["classes"] = {"a": {"mbps": [10, 10]}}
    d["network"]["contention"] = "shared"
    d["network"]["rtt_ms"] = 0
    d["workload"]["message_overhead_bytes"] = 0
    d["fleet"]["groups"] = [
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "a", "name": "r8"},
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "a", "name": "r8b"},
    ]
    _, out = run_dict(d)
    dev = out.device_rounds.set_index("group")
    # equal rates, equal sizes: each gets 5 Mbit/s, both finish at 2x the solo time
    assert dev.loc["r8", "t_download_end_s"] == pytest.approx(2 * 8 * (BYTES_DOWN - 1024) / 10e6, rel=1e-9)


def test_periodic_availability_limits_selection():
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 30, "placement": "lan"}]
    d["dynamics"]["availability"] = {"kind": "periodic", "period_s": 3600, "on_fraction": 0.5}
    d["training"]["rounds"] = 4
    _, out = run_dict(d)
    n = out.rounds["n_selected"].to_numpy()
    assert (n < 30).all() and (n > 0).all()


def test_verify_catches_tampered_records():
    from sim.verify import VerificationError, verify

    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "xavier_nx", "count": 3, "placement": "lan"}]
    d["training"]["rounds"] = 2
    _, out = run_dict(d)
    verify(out.rounds, out.device_rounds)
    bad = out.device_rounds.copy()
    bad.loc[0, "t_report_s"] = bad.loc[0, "round_end_s"] + 1.0
    with pytest.raises(VerificationError, match="report after the round end"):
        verify(out.rounds, bad)
    bad = out.device_rounds.copy()
    bad.loc[0, "credited"] = False
    with pytest.raises(VerificationError, match="credited"):
        verify(out.rounds, bad)
    bad_rounds = out.rounds.copy()
    bad_rounds.loc[1, "t_end_s"] += 5.0
    with pytest.raises(VerificationError, match="last device event"):
        verify(bad_rounds, out.device_rounds)


def test_strategy_may_not_lower_sparsity():
    from algorithms.fixed import FixedStrategy
    from sim.engine import StrategyError

    d = base_scenario()
    d["algorithm"] = {"name": "fixed", "params": {"prune_target": 0.5, "ramp_rounds": 1}}
    d["training"]["rounds"] = 2
    from sim.loader import validate
    from sim.engine import Simulation
    from fleet_helpers import REPO

    sim = Simulation(validate(d, "<t>", REPO), REPO)
    orig = FixedStrategy.plan

    def lowering(self, r, view, selected):
        plans = orig(self, r, view, selected)
        if r == 1:
            import dataclasses
            plans = [dataclasses.replace(p, prune_ratio=0.1) for p in plans]
        return plans

    sim.strategy.plan = lowering.__get__(sim.strategy)
    with pytest.raises(StrategyError, match="lowers"):
        sim.run()


def test_fast_path_equals_general_path(monkeypatch):
    """The engine's vectorised fast path must give bit-identical records to the general path."""
    import pandas as pd

    from devices.network import BandwidthModel
    from sim.loader import load_scenario
    from sim.runner import simulate
    from fleet_helpers import REPO

    sets = ["training.rounds=6", "dynamics.power_mode.every_rounds=2"]
    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", sets)
    _, fast = simulate(sc, base)
    orig_init = BandwidthModel.__init__

    def all_traced(self, *a, **k):  # make every device look traced -> general path for all
        orig_init(self, *a, **k)
        self.traced = self.traced | True

    monkeypatch.setattr(BandwidthModel, "__init__", all_traced)
    _, general = simulate(sc, base)
    pd.testing.assert_frame_equal(fast.device_rounds, general.device_rounds, check_exact=True)
    pd.testing.assert_frame_equal(fast.rounds, general.rounds, check_exact=True)


def test_trace_replay_integrates_rate_exactly(tmp_path):
    """One device on a 2-segment trace: 8 Mbit/s for 1 s then 2 Mbit/s for 1 s (mean 5), device mean 5."""
    from devices.network import load_trace

    trace = tmp_path / "t.csv"
    trace.write_text("time_s,mbps\n0,8\n1,2\n")
    d = base_scenario()
    d["network"]["classes"] = {"lan": {"mbps": [5, 5], "trace": str(trace)}}
    d["network"]["rtt_ms"] = 0
    sim, out = run_dict(d)
    dev = out.device_rounds.iloc[0]
    off = float(sim.fleet.bandwidth.offsets_s[0])
    tr = load_trace(trace)
    t_dn = tr.transfer_s(8 * BYTES_DOWN / 1e6, off, 1.0)
    assert dev["t_download_end_s"] == pytest.approx(t_dn, rel=1e-12)
    # independent: walk the trace second by second
    remaining, t = 8 * BYTES_DOWN / 1e6, off
    while True:
        rate = 8.0 if (t % 2.0) < 1.0 else 2.0
        seg = 1.0 - (t % 1.0)
        if rate * seg >= remaining:
            t += remaining / rate
            break
        remaining -= rate * seg
        t += seg
    assert dev["t_download_end_s"] == pytest.approx(t - off, rel=1e-9)


def test_model_from_hf_config_path(tmp_path):
    import json

    cfg = {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
           "intermediate_size": 1024, "vocab_size": 30522, "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    d = base_scenario()
    d["workload"]["model"] = str(tmp_path / "config.json")
    sim, out = run_dict(d)
    assert sim.workload.arch.num_layers == 4 and sim.workload.arch.hidden == 256
    assert out.device_rounds["status"].iloc[0] == "ok"


def test_paper_calibration_expresses_the_70_percent_round():
    """paper-fleet-80-calibrated: with default modes, no load and equal links, AGX/TX2 round ~0.70."""
    from sim.loader import load_scenario
    from sim.runner import simulate
    from fleet_helpers import REPO

    sets = ["dynamics.power_mode.kind=fixed", "dynamics.power_mode.initial=default",
            "dynamics.background_load.kind=none", "network.fluctuation.sigma_log=0",
            "fleet.groups.0.placement=mid", "fleet.groups.1.placement=mid", "fleet.groups.2.placement=mid",
            "network.classes.mid.mbps=[1000, 1000]", "training.rounds=1"]
    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80-calibrated.yaml", sets)
    _, out = simulate(sc, base)
    t = out.device_rounds.assign(dt=lambda x: x["t_report_s"] - x["t_round_start_s"]) \
        .groupby("device_type", observed=True)["dt"].mean()
    assert t["agx_xavier"] / t["tx2"] == pytest.approx(0.70, abs=0.01)
    assert t["xavier_nx"] / t["tx2"] == pytest.approx(0.85, abs=0.01)
    sc2, _ = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml", sets)
    _, out2 = simulate(sc2, base)
    t2 = out2.device_rounds.assign(dt=lambda x: x["t_report_s"] - x["t_round_start_s"]) \
        .groupby("device_type", observed=True)["dt"].mean()
    assert t2["agx_xavier"] / t2["tx2"] < 0.25  # datasheet: ~5x faster in default modes


def test_time_budget_stops_the_run():
    d = base_scenario()
    d["training"] = {"rounds": 50, "local_steps": 20, "time_budget_s": 30.0}
    sim, out = run_dict(d)
    assert sim.stop_reason == "time_budget"
    # stops before the first round that would start at or after the budget
    assert out.rounds["t_start_s"].max() < 30.0 <= out.rounds["t_end_s"].max()


def test_python_api_writes_a_run(tmp_path):
    import json

    import sim

    res = sim.run("scenarios/quickstart.yaml", ["training.rounds=2", "output.plots=false"], out=tmp_path)
    assert res.run_dir.parent.parent == tmp_path
    assert json.loads((res.run_dir / "status.json").read_text())["status"] == "finished"
    assert len(res.rounds) == 2 and res.summary["rounds_completed"] == 2

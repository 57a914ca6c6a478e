"""COMP inside the real learner and the simulator: the ``comp`` baseline removes proxy blocks and groups once,
then trains; ``prune_then_fedlora`` and ``fedlora_then_prune`` take ``pruner: comp``; the state round-trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fleet_helpers import base_scenario

from sim.loader import validate
from sim.runner import simulate


def scenario(algorithm: dict, model: str = "tiny-bert") -> dict:
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 2, "power_modes": ["MAXN"], "placement": "lan"}]
    d["workload"].update(seq_len=32, lora_targets=["query", "value", "ffn_in"])
    d["training"] = {"rounds": 2, "local_steps": 2}
    d["algorithm"] = algorithm
    d["learning"] = {"kind": "real", "model": model, "train_examples": 200, "test_size": 40,
                     "partition": {"kind": "iid", "min_size": 8}}
    return d


def test_comp_baseline_removes_blocks_and_groups_once():
    d = scenario({"name": "comp", "params": {"layer_ratio": 0.5, "neuron_ratio": 0.5, "rank": 4, "batch_size": 8}})
    sim, out = simulate(validate(d))
    dev = out.device_rounds
    lr = sim.learner
    for st in lr.devices:  # 2 proxy blocks: one removed; half the heads and channels of the other
        kept = st.masks.kept_layers()
        assert kept.sum() == 1
        li = int(np.flatnonzero(kept)[0])
        assert st.masks.attn[li].mean() == 0.5 and st.masks.ffn[li].mean() == 0.5
        assert np.isfinite(st.masks.scales["ffn"]).all()
    assert r_ok(out) and (dev["lora_update_norm"] > 0).all()
    assert lr.info()["comp_peak_mem_bytes"] > 0
    # the layer-pruned plan is priced with fewer target blocks than the same plan without layer pruning
    assert (dev["flops_per_step"] < 0.8 * flops_without_layers(d)).all()
    before = [s.masks.key() for s in lr.devices]
    state = lr.state()
    assert all("layers" in s and "scales" in s for s in state["devices"])
    for s in lr.devices:  # forget the structure, then restore it from the checkpoint data
        s.masks.layers = s.masks.scales = None
    assert [s.masks.key() for s in lr.devices] != before
    lr.set_state(state)
    assert [s.masks.key() for s in lr.devices] == before


def r_ok(out) -> bool:
    return bool(out.rounds["accuracy"].notna().all())


def flops_without_layers(d: dict) -> float:
    d = {**d, "algorithm": {"name": "prune_then_fedlora", "params": {"prune_target": 0.5, "rank": 4,
                                                                     "batch_size": 8}},
         "learning": {"kind": "none"}}
    _, out = simulate(validate(d))
    return float(out.device_rounds["flops_per_step"].max())


def test_pruner_comp_in_the_sequential_baselines_is_deterministic():
    d = scenario({"name": "prune_then_fedlora", "params": {"prune_target": 0.5, "rank": 4, "batch_size": 8,
                                                            "pruner": "comp"}}, model="tiny-llama")
    sim, a = simulate(validate(d))
    _, b = simulate(validate(d))
    pd.testing.assert_frame_equal(a.device_rounds, b.device_rounds)
    assert all(s.masks.layers is None and s.masks.ffn.mean() == 0.5 for s in sim.learner.devices)
    assert np.allclose(a.device_rounds["proxy_ffn_sparsity"], 0.5)
    d = scenario({"name": "fedlora_then_prune", "params": {"prune_target": 0.5, "rank": 4, "batch_size": 8,
                                                            "pruner": "comp", "prune_round": 1}})
    sim, c = simulate(validate(d))
    sp = c.device_rounds.groupby("round")["proxy_ffn_sparsity"].mean()
    assert sp[0] == 0.0 and sp[1] == 0.5


def test_comp_policy_timing_only_prices_fewer_blocks_and_checks_params():
    """Timing only: the comp policy's plans carry the split ratios; the layer-pruned rounds are faster than
    prune_then_fedlora at the same neuron ratio; bad params are one clear error."""
    import pytest  # noqa: PLC0415
    from policy_helpers import hetero_fleet  # noqa: PLC0415

    from sim.loader import ScenarioError  # noqa: PLC0415

    d = hetero_fleet(rounds=3)
    d["algorithm"] = {"name": "comp", "params": {"prune_target": 0.5}}
    _, a = simulate(validate(d))
    _, b = simulate(validate(d))
    pd.testing.assert_frame_equal(a.device_rounds, b.device_rounds)
    assert np.allclose(a.device_rounds["prune_ratio"], 1 - 0.5 / 0.75)  # neuron ratio of the split
    d["algorithm"] = {"name": "prune_then_fedlora", "params": {"prune_target": 1 - 0.5 / 0.75}}
    _, c = simulate(validate(d))
    assert (a.device_rounds["flops_per_step"].to_numpy() < c.device_rounds["flops_per_step"].to_numpy()).all()
    d["algorithm"] = {"name": "comp", "params": {"layer_ratio": 0.2}}
    with pytest.raises(ScenarioError, match="layer_ratio and neuron_ratio go together"):
        validate(d)

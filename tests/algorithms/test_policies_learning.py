"""Every policy with the real learner on the tiny random proxy: runs, is deterministic, and its choices
reach the model (ranks, per-layer ranks, self-pruned ranks, full FedSpine rewards)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fleet_helpers import base_scenario
from policy_helpers import POLICIES, with_policy

from sim.loader import validate
from sim.runner import simulate


def tiny_learning(rounds: int = 3) -> dict:
    d = base_scenario()
    d["fleet"]["groups"] = [
        {"type": "tx2", "count": 2, "power_modes": ["MAXN"], "placement": "lan"},
        {"type": "agx_xavier", "count": 2, "power_modes": ["MAXN"], "placement": "lan"},
    ]
    d["workload"].update(seq_len=32, lora_targets=["query", "value", "ffn_in"])
    d["training"] = {"rounds": rounds, "local_steps": 2}
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 200, "test_size": 40,
                     "partition": {"kind": "quantity", "alpha": 1.0, "min_size": 8}, "eval": {"batch_size": 40}}
    return d


@pytest.mark.parametrize("name", POLICIES)
def test_policy_with_real_learning_is_deterministic(name):
    d = with_policy(tiny_learning(), name, batch_size=8)
    _, a = simulate(validate(d))
    _, b = simulate(validate(d))
    pd.testing.assert_frame_equal(a.device_rounds, b.device_rounds)
    pd.testing.assert_frame_equal(a.rounds, b.rounds)
    assert a.rounds["accuracy"].notna().any()
    dev = a.device_rounds
    assert (dev["lora_update_norm"] > 0).all()
    assert (dev["lora_rank_reported"] <= dev["lora_rank"]).all()


def test_fedspine_uses_the_full_reward_with_a_learner():
    _, out = simulate(validate(with_policy(tiny_learning(), "fedspine", batch_size=8)))
    dev = out.device_rounds
    assert dev["reward_loss"].notna().all() and dev["reward_importance"].notna().all()
    assert np.allclose(dev.groupby("round")["reward_importance"].mean(), 1.0)  # normalised by the round mean


def test_hetlora_self_prunes_and_keeps_the_smaller_rank():
    d = with_policy(tiny_learning(rounds=3), "hetlora", batch_size=8, ranks=[8], rank_prune_decay=0.5,
                    rank_prune_tol=0.999)
    _, out = simulate(validate(d))
    dev = out.device_rounds
    r0 = dev[dev["round"] == 0]
    assert (r0["lora_rank"] == 8).all() and (r0["lora_rank_reported"] == 4).all()
    assert (dev[dev["round"] == 1]["lora_rank"] == 4).all()  # never grows back


def test_legend_per_layer_ranks_reach_the_learner():
    _, out = simulate(validate(with_policy(tiny_learning(), "legend", batch_size=8)))
    dev = out.device_rounds
    assert (dev["layer_ranks"] != "").all()
    assert (dev["lora_rank_reported"] == dev["lora_rank"]).all()

"""Shared by the policy tests: the policy list and a heterogeneous timing-only fleet."""

from __future__ import annotations

from fleet_helpers import base_scenario

POLICIES = ["fedspine", "fedlora", "hetlora", "flexlora", "prune_then_fedlora", "fedlora_then_prune", "fedapt",
            "fedmp", "legend", "random", "oracle"]
PRUNING = {"fedspine": 0.4, "prune_then_fedlora": 0.4, "fedlora_then_prune": 0.4, "fedapt": 0.4, "fedmp": 0.4,
           "oracle": 0.4}


def hetero_fleet(rounds: int = 8, seed: int = 0) -> dict:
    d = base_scenario(seed=seed)
    d["fleet"]["groups"] = [
        {"type": "tx2", "count": 4, "placement": "lan"},
        {"type": "xavier_nx", "count": 4, "placement": "lan"},
        {"type": "agx_xavier", "count": 2, "placement": "lan", "power_modes": ["MAXN", "MODE_30W_ALL"]},
    ]
    d["network"]["classes"] = {"lan": {"mbps": [5, 30]}}
    d["network"]["fluctuation"] = {"phi": 0.5, "sigma_log": 0.2}
    d["dynamics"]["power_mode"] = {"kind": "periodic", "every_rounds": 3}
    d["dynamics"]["background_load"] = {"kind": "lognormal", "sigma": 0.2}
    d["training"] = {"rounds": rounds, "local_steps": 10}
    return d


def with_policy(d: dict, name: str, **params) -> dict:
    if name in PRUNING and "prune_target" not in params:
        params["prune_target"] = PRUNING[name]
    if name == "random":
        params.setdefault("reach_target_by", d["training"]["rounds"])
    d["algorithm"] = {"name": name, "params": params}
    return d

"""Every policy inside the simulator (timing only): contracts, determinism, and what each one decides."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from policy_helpers import POLICIES, PRUNING, hetero_fleet, with_policy

from algorithms.base import FleetView, RoundReports, StrategyContext
from algorithms.registry import make_strategy, strategy_names
from devices.plan import Plan
from sim.loader import ScenarioError, validate
from sim.runner import simulate


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def test_every_policy_is_registered():
    assert set(POLICIES) <= set(strategy_names())


@pytest.mark.parametrize("name", POLICIES)
def test_policy_runs_is_monotone_and_deterministic(name):
    d = with_policy(hetero_fleet(), name)
    _, a = simulate(validate(d))
    _, b = simulate(validate(d))
    assert parquet_bytes(a.device_rounds) == parquet_bytes(b.device_rounds)  # same seed, same choices and results
    assert parquet_bytes(a.rounds) == parquet_bytes(b.rounds)
    dev = a.device_rounds
    for _, g in dev.groupby("device_id", observed=True):
        assert (np.diff(g["prune_ratio"].to_numpy()) >= -1e-12).all()
    last = dev[dev["round"] == dev["round"].max()]
    target = PRUNING.get(name, 0.5 if name == "random" else 0.0)
    assert np.allclose(last["prune_ratio"], target)  # every device ends at the target sparsity


@pytest.mark.parametrize("name", ["fedspine", "fedmp", "random", "hetlora"])
def test_seed_changes_the_choices(name):
    d = with_policy(hetero_fleet(), name, **({"rank_by": "random"} if name == "hetlora" else {}))
    _, a = simulate(validate(d))
    d["seed"] = 1
    _, b = simulate(validate(d))
    cols = ["prune_ratio", "lora_rank"]
    assert not a.device_rounds[cols].equals(b.device_rounds[cols])


def test_fedspine_records_rewards_and_its_terms():
    _, out = simulate(validate(with_policy(hetero_fleet(), "fedspine")))
    dev = out.device_rounds
    ok = dev["status"] == "ok"
    assert dev.loc[ok, "reward"].between(0, 1).all()
    assert dev.loc[ok, "reward_time"].between(0, 1).all() and dev.loc[ok, "reward_progress"].notna().all()
    assert dev["reward_loss"].isna().all()  # timing only: the documented time-only reward
    assert dev["lora_rank"].nunique() > 1  # per-device ranks
    _, fixed = simulate(validate(with_policy(hetero_fleet(), "fedapt")))
    assert fixed.device_rounds["reward"].isna().all()


def test_full_reward_without_learner_is_refused_with_the_key():
    d = with_policy(hetero_fleet(), "fedspine", reward={"terms": "full"})
    with pytest.raises(ScenarioError, match=r"algorithm\.params\.reward\.terms: .*learning\.kind"):
        validate(d)


class Poison:
    """Raises on any use: a prior-free strategy must never touch device profiles, types or names."""

    def __getattr__(self, name):
        raise AssertionError(f"prior-free strategy read device information ({name})")

    def __getitem__(self, i):
        raise AssertionError("prior-free strategy read a device id")

    def __len__(self):
        raise AssertionError("prior-free strategy read the device list")

    def __iter__(self):
        raise AssertionError("prior-free strategy iterated the device list")


@pytest.mark.parametrize("name", ["fedspine", "fedmp", "hetlora", "flexlora", "legend"])
def test_bandits_are_prior_free(name):
    """The strategy gets a view whose device ids and profiles raise on access, and synthetic reports."""
    n, rounds = 6, 6
    ctx = StrategyContext(n_devices=n, rounds=rounds, local_steps=10, batch_size=16, num_layers=12,
                          rng=np.random.default_rng(0), oracle=Poison())
    params = {"prune_target": 0.3} if name in PRUNING else {}
    s = make_strategy(name, params, ctx)
    assert s.prior_free
    ratio = np.zeros(n)
    sel = np.arange(n)
    speed = np.array([1.0, 1.0, 2.0, 2.0, 5.0, 5.0])
    for r in range(rounds):
        plans = s.plan(r, FleetView(round=r, device_ids=Poison(), prune_ratio=ratio.copy()), sel)
        dur = speed * (1 - np.array([p.prune_ratio for p in plans]) / 2) * 10
        rep = RoundReports(round=r, devices=sel, plans=plans, status=np.array(["ok"] * n), t_start_s=0.0,
                           t_report_s=dur, compute_s=dur * 0.9, bytes_up=np.zeros(n, dtype=np.int64),
                           bytes_down=np.zeros(n, dtype=np.int64), loss_before=np.full(n, np.nan),
                           loss_after=np.full(n, np.nan), lora_update_norm=np.full(n, np.nan))
        s.observe(r, rep)
        ratio = np.array([p.prune_ratio for p in plans])


def test_oracle_is_not_prior_free_and_equalises_times():
    _, apt = simulate(validate(with_policy(hetero_fleet(), "fedapt")))
    _, orc = simulate(validate(with_policy(hetero_fleet(), "oracle")))
    assert np.nanmean(orc.rounds["mean_idle_fraction"]) < np.nanmean(apt.rounds["mean_idle_fraction"])
    from algorithms.registry import get_strategy_class

    assert get_strategy_class("oracle").prior_free is False


def test_hetlora_ranks_follow_reported_speed_and_self_pruning():
    n = 4
    ctx = StrategyContext(n_devices=n, rounds=5, local_steps=10, batch_size=16, num_layers=12,
                          rng=np.random.default_rng(0))
    s = make_strategy("hetlora", {"ranks": [4, 8, 16, 32]}, ctx)
    sel = np.arange(n)
    plans = s.plan(0, FleetView(0, [], np.zeros(n)), sel)
    assert [p.lora_rank for p in plans] == [4] * 4 and plans[0].rank_prune_decay == 0.75
    step = np.array([4.0, 1.0, 3.0, 2.0])  # device 1 fastest, device 0 slowest
    rep = RoundReports(0, sel, plans, np.array(["ok"] * n), 0.0, step * 10 + 1, step * 10,
                       np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.full(n, np.nan),
                       np.full(n, np.nan), np.full(n, np.nan), extra={"lora_rank_reported": np.array([4.0, 3, 4, 4])})
    s.observe(0, rep)
    ranks = [p.lora_rank for p in s.plan(1, FleetView(1, [], np.zeros(n)), sel)]
    # tiers by speed: 32 for the fastest, 4 for the slowest; device 1 self-pruned to 3 and never grows back
    assert ranks == [4, 3, 8, 16]


def test_legend_gives_fast_devices_more_depth_and_higher_ranks_near_the_output():
    _, out = simulate(validate(with_policy(hetero_fleet(), "legend")))
    dev = out.device_rounds
    late = dev[dev["round"] >= 2]
    by_type = late.groupby("device_type", observed=True)[["lora_layers", "lora_rank"]].mean()
    assert by_type.loc["agx_xavier", "lora_layers"] > by_type.loc["tx2", "lora_layers"]
    assert by_type.loc["agx_xavier", "lora_rank"] >= by_type.loc["tx2", "lora_rank"]
    for s in late["layer_ranks"]:
        r = [int(x) for x in s.split(",")]
        assert r == sorted(r)  # bottom first: ranks never decrease toward the output


def test_fedlora_then_prune_prunes_once_late():
    d = with_policy(hetero_fleet(rounds=10), "fedlora_then_prune", recovery_rounds=3)
    _, out = simulate(validate(d))
    per_round = out.device_rounds.groupby("round")["prune_ratio"].max()
    assert (per_round.loc[:6] == 0).all() and (per_round.loc[7:] == 0.4).all()


def test_prune_then_fedlora_prunes_at_round_zero():
    _, out = simulate(validate(with_policy(hetero_fleet(), "prune_then_fedlora")))
    assert (out.device_rounds["prune_ratio"] == 0.4).all()


def test_fedspine_window_params_and_bad_bandit_params():
    d = with_policy(hetero_fleet(), "fedspine", bandit="swucb", bandit_params={"window": 0})
    with pytest.raises(ScenarioError, match=r"algorithm\.params\.bandit_params: .*window"):
        validate(d)
    d = with_policy(hetero_fleet(), "fedspine", bandit="nope")
    with pytest.raises(ScenarioError, match=r"algorithm\.params\.bandit"):
        validate(d)
    for b in ["ucb1", "ducb", "swucb", "exp3", "thompson", "egreedy"]:
        _, out = simulate(validate(with_policy(hetero_fleet(rounds=4), "fedspine", bandit=b)))
        assert len(out.rounds) == 4


def test_strategy_state_round_trip_continues_identically():
    n = 5
    def ctx():
        return StrategyContext(n_devices=n, rounds=6, local_steps=10, batch_size=16, num_layers=12,
                               rng=np.random.default_rng(3))
    a = make_strategy("fedspine", {"prune_target": 0.3}, ctx())
    sel = np.arange(n)
    ratio = np.zeros(n)

    def step(s, r, ratio):
        plans = s.plan(r, FleetView(r, [], ratio), sel)
        dur = np.arange(1, n + 1) * 10.0
        s.observe(r, RoundReports(r, sel, plans, np.array(["ok"] * n), 0.0, dur, dur, np.zeros(n, dtype=np.int64),
                                  np.zeros(n, dtype=np.int64), np.full(n, np.nan), np.full(n, np.nan),
                                  np.full(n, np.nan)))
        return plans, np.array([p.prune_ratio for p in plans])

    for r in range(3):
        _, ratio = step(a, r, ratio)
    import json

    st = json.loads(json.dumps(a.state()))
    b = make_strategy("fedspine", {"prune_target": 0.3}, ctx())
    b.set_state(st)
    ra, rb = ratio.copy(), ratio.copy()
    for r in range(3, 6):
        pa, ra = step(a, r, ra)
        pb, rb = step(b, r, rb)
        assert pa == pb


def test_plan_validation():
    with pytest.raises(ValueError):
        Plan(0.1, 8, (10, 11), 20, 16, layer_ranks=(4, 16))  # max must equal lora_rank
    with pytest.raises(ValueError):
        Plan(0.1, 8, None, 20, 16, layer_ranks=(8,))


@pytest.mark.parametrize("name,params", [
    ("random", {"ranks": [4, 8]}), ("fedspine", {"ranks": [4, 8]}), ("flexlora", {"ranks": [4, 8]}),
    ("legend", {"ranks": [4, 8]}), ("hetlora", {"ranks": [8]}),  # hetlora: self-pruning makes ranks differ
])
def test_fedavg_with_unequal_ranks_is_refused(name, params):
    d = with_policy(hetero_fleet(), name, aggregator="fedavg", **params)
    with pytest.raises(ScenarioError, match=r"algorithm\.params\.aggregator: 'fedavg' needs"):
        validate(d)


@pytest.mark.parametrize("name", ["oracle", "legend", "fedspine"])
def test_profile_builds_the_strategy_as_a_run_does(name):
    """``fedfleet profile`` plans round 0 with the run's own Simulation (the oracle needs its predictor)."""
    from fleet_helpers import fedfleet

    r = fedfleet("profile", "scenarios/quickstart.yaml", "--set", f"algorithm.name={name}", "--set", "algorithm.params={}")
    assert r.returncode == 0, r.stderr
    assert "round-0 plan" in r.stdout

"""The fleet's sparsity constraint: the projection onto {weighted mean = P, bounds}, and a paper-like run
under ``sparsity.constraint: fleet_mean`` that ends with fleet-mean sparsity P."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from algorithms.sparsity import SparsityRule, project_mean
from sim.loader import load_scenario
from sim.runner import simulate, summarize

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", range(20))
def test_projection_mean_exact_and_bounds_respected(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    target = 0.3
    rule = SparsityRule("fleet_mean", 0.2)
    current = rng.uniform(0.0, 0.3, n) * (rng.random(n) < 0.5)  # some devices are already pruned
    lo, hi = rule.bounds(target, current)
    w = rng.uniform(0.1, 5.0, n) if seed % 2 else None
    wn = np.full(n, 1 / n) if w is None else w / w.sum()
    if wn @ lo > target:  # infeasible draw: the projection must refuse it
        with pytest.raises(ValueError, match="no ratios in the bounds"):
            project_mean(rng.uniform(0, 1, n), target, lo, hi, w)
        return
    q = rng.uniform(-0.5, 1.5, n)
    p = project_mean(q, target, lo, hi, w)
    assert abs(wn @ p - target) <= 1e-12
    assert np.all(p >= lo) and np.all(p <= hi)
    assert np.all(p <= 0.9) and np.all(p >= target - 0.2 - 1e-15)


def test_projection_is_the_nearest_feasible_point():
    """KKT: p = clip(q + λ) for one λ, so no feasible mean-preserving swap between two free devices
    moves p closer to q; checked against random feasible points."""
    rng = np.random.default_rng(7)
    n = 30
    lo, hi = np.full(n, 0.1), np.full(n, 0.5)
    q = rng.uniform(0, 0.8, n)
    p = project_mean(q, 0.3, lo, hi)
    best = np.sum((p - q) ** 2)
    for _ in range(500):
        x = np.clip(rng.uniform(0.1, 0.5, n), lo, hi)
        x = project_mean(x, 0.3, lo, hi)  # a feasible point
        assert np.sum((x - q) ** 2) >= best - 1e-12


def test_projection_identity_when_feasible():
    q = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    p = project_mean(q, 0.3, np.full(5, 0.1), np.full(5, 0.5))
    assert np.array_equal(p, q)
    uniform = np.full(80, 0.3)
    assert np.array_equal(project_mean(uniform, 0.3, *SparsityRule("fleet_mean", 0.2).bounds(0.3, np.zeros(80))), uniform)


def test_bounds_follow_current_sparsity_and_cap():
    lo, hi = SparsityRule("fleet_mean", 0.7).bounds(0.3, np.array([0.0, 0.45]))
    assert lo.tolist() == [0.0, 0.45] and hi.tolist() == [0.9, 0.9]


def test_paperlike_fleet_mean_ends_at_target():
    sc, base = load_scenario(ROOT / "scenarios/paper-fleet-80-paperlike.yaml", [
        "training.rounds=15", "algorithm={name: fedspine, params: {prune_target: 0.3}}",
        "sparsity={constraint: fleet_mean, spread: 0.2}"])
    _, out = simulate(sc, base)
    s = summarize(sc, out, "t")
    assert abs(s["final_prune_ratio_mean"] - 0.3) <= 1e-9
    assert abs(s["final_mean_prune_ratio"] - 0.3) <= 1e-9
    assert 0.1 - 1e-12 <= s["final_prune_ratio_min"] < s["final_prune_ratio_max"] <= 0.5 + 1e-12  # devices differ
    dev = out.device_rounds
    for _, g in dev.groupby("device_id", observed=True):
        assert (np.diff(g["prune_ratio"].to_numpy()) >= -1e-12).all()


def test_per_device_is_todays_behaviour():
    """The default constraint leaves every device at P (the rule every pruning policy had before)."""
    sc, base = load_scenario(ROOT / "scenarios/paper-fleet-80-paperlike.yaml", [
        "training.rounds=6", "algorithm={name: fedspine, params: {prune_target: 0.3}}"])
    assert sc.sparsity.constraint == "per_device"
    _, out = simulate(sc, base)
    s = summarize(sc, out, "t")
    assert s["final_prune_ratio_min"] == pytest.approx(0.3) and s["final_prune_ratio_max"] == pytest.approx(0.3)


def _idle_fastest(name: str, constraint: str, rounds: int = 12) -> tuple[float, dict]:
    sc, base = load_scenario(ROOT / "scenarios/paper-fleet-80-paperlike.yaml", [
        f"training.rounds={rounds}", f"algorithm={{name: {name}, params: {{prune_target: 0.3}}}}",
        f"sparsity={{constraint: {constraint}}}"])
    _, out = simulate(sc, base)
    return float(np.nanmean(out.rounds["idle_fastest"])), summarize(sc, out, "t")


def test_oracle_fleet_mean_idles_less_than_per_device():
    per_device, _ = _idle_fastest("oracle", "per_device")
    fleet_mean, s = _idle_fastest("oracle", "fleet_mean")
    assert fleet_mean < per_device
    assert abs(s["final_prune_ratio_mean"] - 0.3) <= 1e-9
    assert s["final_prune_ratio_max"] - s["final_prune_ratio_min"] > 0.1  # slow boards prune more


def test_fedmp_fixed_gives_slow_boards_the_higher_ratio():
    sc, base = load_scenario(ROOT / "scenarios/paper-fleet-80-paperlike.yaml", [
        "training.rounds=6", "algorithm={name: fedmp_fixed, params: {prune_target: 0.3}}",
        "sparsity={constraint: fleet_mean}"])
    _, out = simulate(sc, base)
    _, again = simulate(sc, base)
    assert out.device_rounds["prune_ratio"].equals(again.device_rounds["prune_ratio"])
    s = summarize(sc, out, "t")
    assert abs(s["final_prune_ratio_mean"] - 0.3) <= 1e-9
    dev = out.device_rounds
    first = dev[dev["round"] == 0].set_index("device_index")["t_report_s"]
    last = dev[dev["round"] == dev["round"].max()].set_index("device_index")["prune_ratio"]
    slow, fast = first.idxmax(), first.idxmin()
    assert last[slow] == pytest.approx(0.5) and last[fast] == pytest.approx(0.1)
    assert (dev[dev["round"] == 0]["prune_ratio"].nunique()) == 1  # the probe round is uniform

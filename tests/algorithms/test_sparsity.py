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


# ---------------------------------------------------------------- issue 20: arms, ramp, prediction
def _run(algo: str, constraint: str, rounds: int, world: str = "paper-fleet-80-paperlike.yaml", extra=()):
    sc, base = load_scenario(ROOT / "scenarios" / world, [
        f"training.rounds={rounds}", f"algorithm={algo}", f"sparsity={{constraint: {constraint}}}", *extra])
    _, out = simulate(sc, base)
    return sc, out


def _ramp(t: int, rounds: int, target: float = 0.3) -> float:
    from algorithms.schedule import reach_round, scheduled_ratio
    return scheduled_ratio("linear", t, reach_round(None, rounds), target)


@pytest.mark.parametrize("name", ["fedspine", "oracle"])
def test_fleet_mean_follows_the_uniform_ramp_every_round(name):
    """Under fleet_mean the fleet's mean ratio is the uniform plan's at every round (no method wins by
    pruning more early), and each device moves at most max_step_factor x P / R per round."""
    rounds = 20
    _, out = _run(f"{{name: {name}, params: {{prune_target: 0.3}}}}", "fleet_mean", rounds)
    dev = out.device_rounds
    means = dev.groupby("round")["prune_ratio"].mean()
    for t, m in means.items():
        assert m == pytest.approx(_ramp(int(t), rounds), abs=1e-9)
    step = 4.0 * 0.3 / 16  # reach_round(None, 20) = 16
    for _, g in dev.groupby("device_index"):
        d = np.diff(np.concatenate([[0.0], g.sort_values("round")["prune_ratio"].to_numpy()]))
        assert (d >= -1e-12).all() and (d <= step + 1e-9).all()


def test_target_arms_differ_across_boards_and_track_speed():
    """FedSpine's target arms under fleet_mean: boards end at different ratios, the slower boards
    (longer first rounds) at the higher ones, with no prior knowledge of the devices."""
    sc, out = _run("{name: fedspine, params: {prune_target: 0.3}}", "fleet_mean", 60,
                   "paper-fleet-80-stationary.yaml")
    dev = out.device_rounds
    first = dev[dev["round"] == 0].set_index("device_index")
    slowness = first["t_report_s"] - first["t_round_start_s"]
    final = dev[dev["round"] == dev["round"].max()].set_index("device_index")["prune_ratio"]
    rho = slowness.rank().corr(final.rank())
    assert rho > 0.5, rho
    assert final.max() - final.min() > 0.1


def test_reach_round_defaults_to_four_fifths():
    from algorithms.schedule import reach_round
    assert [reach_round(None, r) for r in (1, 4, 5, 50, 200)] == [1, 4, 4, 40, 160]
    assert reach_round(7, 200) == 7


def test_uniform_plan_reaches_target_before_the_last_round():
    """No method jumps to its target in the last round: fedapt is at P from round ceil(0.8 R) - 1 on."""
    _, out = _run("{name: fedapt, params: {prune_target: 0.3}}", "per_device", 10)
    p = out.device_rounds.groupby("round")["prune_ratio"].max()
    assert p[7] == pytest.approx(0.3) and p[6] < 0.3 - 1e-6 and p[9] == pytest.approx(0.3)


def test_predicted_times_scale_compute_by_the_model_flops():
    """T^ = (T - C) + C F(at) / F(played): transfers kept, compute scaled by the FLOPs ratio."""
    from algorithms.base import RoundReports
    from algorithms.rewards import predicted_times
    from devices.plan import Plan
    played = [Plan(0.1, 8, None, 10, 8), Plan(0.2, 8, None, 10, 8)]
    at = [Plan(0.4, 8, None, 10, 8), Plan(0.2, 8, None, 10, 8)]
    n = 2
    rep = RoundReports(round=0, devices=np.arange(n), plans=played, status=np.array(["ok", "ok"]), t_start_s=0.0,
                       t_report_s=np.array([10.0, 20.0]), compute_s=np.array([6.0, 15.0]),
                       bytes_up=np.zeros(n), bytes_down=np.zeros(n), loss_before=np.full(n, np.nan),
                       loss_after=np.full(n, np.nan), lora_update_norm=np.full(n, np.nan))

    def flops(plan: Plan) -> float:  # a toy cost: linear in the kept width
        return 100.0 * (1.0 - plan.prune_ratio)

    got = predicted_times(rep, at, flops)
    assert got[0] == pytest.approx(4.0 + 6.0 * 60.0 / 90.0)
    assert got[1] == pytest.approx(20.0)


def test_registry_loads_every_builtin_after_a_direct_import():
    """Importing one strategy module first (as a benchmark does) must not hide the others."""
    import subprocess
    import sys
    code = ("from algorithms.fedspine import FedSpine\nfrom algorithms.registry import strategy_names\n"
            "names = strategy_names()\nassert 'fedapt' in names and 'oracle' in names, names\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

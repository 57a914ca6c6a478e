"""Rewards (``docs/method.md`` section 6) and pruning schedules, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from algorithms.base import RoundReports
from algorithms.rewards import RewardSpec, check_reward, compute_rewards
from algorithms.schedule import scheduled_ratio, window
from devices.plan import Plan


def reports(status, durations, lb, la, norms, ratios) -> RoundReports:
    n = len(status)
    return RoundReports(
        round=3, devices=np.arange(n), plans=[Plan(p, 8, None, 20, 16) for p in ratios], status=np.array(status),
        t_start_s=100.0, t_report_s=100.0 + np.array(durations, dtype=float), compute_s=np.ones(n),
        bytes_up=np.zeros(n, dtype=np.int64), bytes_down=np.zeros(n, dtype=np.int64),
        loss_before=np.array(lb, dtype=float), loss_after=np.array(la, dtype=float),
        lora_update_norm=np.array(norms, dtype=float))


def test_product_reward_equals_hand_computation():
    rep = reports(["ok", "ok", "ok"], [10.0, 20.0, 40.0], [1.0, 2.0, 1.0], [0.8, 1.0, 1.2], [1.0, 2.0, 3.0],
                  [0.2, 0.1, 0.3])
    prev = np.array([0.1, 0.1, 0.0])
    med = 20.0
    for kappa in (0.0, 1.0):  # the default progress weight (0, since issue 20) and the earlier 1
        cols = compute_rewards(rep, prev, 0.5, RewardSpec(weights={"progress": kappa}), learning=True)
        for j, (T, lb, la, nb, p, pp) in enumerate(zip([10, 20, 40], [1, 2, 1], [0.8, 1.0, 1.2], [1, 2, 3],
                                                        [0.2, 0.1, 0.3], prev)):
            dl = max(0.0, lb - la) / lb
            pi = (p - pp) / 0.5
            imp = nb / 2.0
            g = math.exp(-abs(T - med) / med)
            rho = min(1.0, max(0.0, dl * (1 + kappa * pi) * imp * g))
            assert cols["reward_loss"][j] == pytest.approx(dl)
            assert cols["reward_progress"][j] == pytest.approx(pi)
            assert cols["reward_importance"][j] == pytest.approx(imp)
            assert cols["reward_time"][j] == pytest.approx(g)
            assert cols["reward"][j] == pytest.approx(rho)
        assert cols["reward"][2] == 0.0  # the loss went up: no improvement, no reward
    assert RewardSpec().weights.progress == 0.0


def test_time_only_sum_mean_and_failures():
    rep = reports(["ok", "ok", "late", "dropped", "cancelled"], [10.0, 30.0, math.nan, math.nan, math.nan],
                  [math.nan] * 5, [math.nan] * 5, [math.nan] * 5, [0.2, 0.2, 0.2, 0.2, 0.2])
    prev = np.array([0.0, 0.2, 0.0, 0.0, 0.0])
    mean_t = 20.0  # median of two = mean
    g0, g1 = math.exp(-10 / mean_t), math.exp(-10 / mean_t)
    cols = compute_rewards(rep, prev, 0.4, RewardSpec(), learning=False)  # auto -> time_only, progress weight 0
    assert cols["reward"][0] == pytest.approx(g0) and cols["reward"][1] == pytest.approx(g1)
    cols = compute_rewards(rep, prev, 0.4, RewardSpec(weights={"progress": 1.0}), learning=False)
    assert cols["reward"][0] == pytest.approx((1 + 0.5) / 2 * g0)
    assert cols["reward"][1] == pytest.approx((1 + 0.0) / 2 * g1)
    assert cols["reward"][2] == 0.0 and cols["reward"][3] == 0.0  # selected, no report: reward 0
    assert math.isnan(cols["reward"][4])  # cancelled: not observed
    assert np.isnan(cols["reward_loss"]).all() and np.isnan(cols["reward_importance"]).all()
    spec = RewardSpec(form="sum", time_ref="mean", time_shape="ratio", weights={"progress": 1.0, "time": 3.0})
    cols = compute_rewards(rep, prev, 0.4, spec, learning=False)
    assert cols["reward"][0] == pytest.approx((0.5 + 3 * (10 / 20)) / 4)
    assert cols["reward"][1] == pytest.approx((0.0 + 3 * (20 / 30)) / 4)


def test_full_reward_needs_a_learner():
    assert check_reward(RewardSpec(terms="full"), learning=False)[0][0] == "reward.terms"
    assert "learning.kind" in check_reward(RewardSpec(terms="full"), learning=False)[0][1]
    assert check_reward(RewardSpec(terms="full"), learning=True) == []
    assert check_reward(RewardSpec(), learning=False) == []


def test_schedules():
    R, P = 10, 0.5
    lin = [scheduled_ratio("linear", t, R, P) for t in range(12)]
    assert lin[0] == pytest.approx(0.05) and lin[9] == P and lin[11] == P
    cub = [scheduled_ratio("cubic", t, R, P, warmup=0.1, final=0.2) for t in range(R)]
    assert cub[0] == 0.0 and cub[-1] == P and cub[-2] == P
    assert all(b >= a for a, b in zip(cub, cub[1:]))
    # cubic front-loads the pruning: above the linear ramp in the middle
    assert cub[4] > scheduled_ratio("linear", 4, R, P)


@pytest.mark.parametrize("factor", [1.0, 2.0, 5.0])
def test_window_is_monotone_bounded_and_reaches_the_target(factor):
    R, P = 8, 0.4
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = 0.0
        for t in range(R + 2):
            lo, hi = window(t, R, P, p, factor)
            assert p <= lo <= hi <= P + 1e-12
            assert hi - p <= factor * P / R + 1e-12 or lo == hi
            p = float(rng.uniform(lo, hi))
        assert p == pytest.approx(P)
    # factor 1 leaves only the linear ramp
    p = 0.0
    for t in range(R):
        lo, hi = window(t, R, P, p, 1.0)
        assert lo == pytest.approx(hi) and lo == pytest.approx(P * (t + 1) / R)
        p = lo


@pytest.mark.parametrize(("how", "ref"), [("max", 40.0), ("q90", float(np.quantile([10.0, 20.0, 40.0], 0.9)))])
def test_time_term_aligned_with_the_round_end(how, ref):
    """time_ref max / q90: the fastest device scores lowest and the one nearest the round's end highest."""
    rep = reports(["ok", "ok", "ok"], [10.0, 20.0, 40.0], [math.nan] * 3, [math.nan] * 3, [math.nan] * 3,
                  [0.1, 0.1, 0.1])
    cols = compute_rewards(rep, np.full(3, 0.1), 0.3, RewardSpec(time_ref=how, weights={"progress": 0.0}),
                           learning=False)
    g = [math.exp(-abs(t - ref) / ref) for t in (10.0, 20.0, 40.0)]
    assert cols["reward_time"] == pytest.approx(g)
    assert cols["reward"] == pytest.approx(g)  # progress weight 0: (1 + 0) / (1 + 0) g
    assert cols["reward"][0] < cols["reward"][1]


def test_others_max_is_the_round_end_the_rest_of_the_fleet_sets():
    from algorithms.rewards import others_max
    t = np.array([3.0, 9.0, 5.0, 7.0, 100.0])
    ok = np.array([True, True, True, True, False])  # a device that did not report does not count
    assert others_max(t, ok)[:4].tolist() == [9.0, 7.0, 9.0, 9.0]
    tied = np.array([4.0, 9.0, 9.0])
    assert others_max(tied, np.ones(3, bool)).tolist() == [9.0, 9.0, 9.0]

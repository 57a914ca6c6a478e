"""devices/network.py: trace replay (exact integration), trace loading, log-AR(1) bandwidth model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devices.network import BandwidthModel, Trace, load_trace
from devices.rng import PerDeviceStream

# rate 2 on [0,10), 5 on [10,30), 1 on [30,50) (last segment lasts as long as the one before);
# period 50 s, 140 Mbit per period, mean 2.8 Mbit/s.
TR = Trace(np.array([0.0, 10.0, 30.0]), np.array([2.0, 5.0, 1.0]))


def cum_megabits(tr: Trace, t: float, scale: float = 1.0) -> float:
    """Independent reference: integral of scale * rate over [0, t] (t >= 0), by whole periods + segments."""
    times = list(tr.times_s) + [tr.period_s]
    per = sum((times[i + 1] - times[i]) * tr.mbps[i] for i in range(len(tr.mbps)))
    n, rest = divmod(t, tr.period_s)
    acc = n * per
    for i in range(len(tr.mbps)):
        lo, hi = times[i], times[i + 1]
        if rest > lo:
            acc += (min(rest, hi) - lo) * tr.mbps[i]
    return scale * acc


def test_trace_geometry():
    assert TR.period_s == 50.0
    assert TR.seg_end_s.tolist() == [10.0, 30.0, 50.0]
    assert TR.mean_mbps == pytest.approx(2.8)
    uneven = Trace(np.array([0.0, 1.0, 4.0, 4.5]), np.array([10.0, 1.0, 4.0, 8.0]))
    assert uneven.period_s == 5.0
    assert uneven.mean_mbps == pytest.approx((10 * 1 + 1 * 3 + 4 * 0.5 + 8 * 0.5) / 5)


@pytest.mark.parametrize(
    "megabits,t0,scale,expected",
    [
        (0.0, 3.0, 1.0, 0.0),
        (-1.0, 3.0, 1.0, 0.0),
        (10.0, 2.0, 1.0, 5.0),  # inside the first segment
        (16.0, 2.0, 1.0, 8.0),  # exactly to the segment end
        (30.0, 5.0, 1.0, 9.0),  # 10 Mbit in [5,10) at 2, then 20 at 5
        (120.0, 5.0, 1.0, 35.0),  # crosses two boundaries: 10 + 100, then 10 at rate 1
        (25.0, 40.0, 1.0, 17.5),  # 10 in [40,50), wraps: 15 at rate 2
        (30.0, 55.0, 1.0, 9.0),  # t0 beyond one period == t0 - period
        (30.0, -45.0, 1.0, 9.0),  # negative t0 wraps too
        (140.0, 5.0, 1.0, 50.0),  # exactly one period
        (280.0, 5.0, 1.0, 100.0),  # exactly two periods (whole periods skipped)
        (310.0, 5.0, 1.0, 109.0),  # two whole periods + 30
        (310.0 + 14 * 140.0, 5.0, 1.0, 809.0),
        (60.0, 5.0, 2.0, 9.0),  # scale doubles the rate
        (15.0, 5.0, 0.5, 9.0),  # 5 in [5,10) at 1, then 10 at 2.5
    ],
)
def test_transfer_s_hand_examples(megabits, t0, scale, expected):
    assert TR.transfer_s(megabits, t0, scale) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_transfer_s_integrates_rate_exactly():
    rng = np.random.default_rng(7)
    traces = [TR, Trace(np.array([0.0, 0.3, 0.7, 2.0, 2.1]), np.array([4.0, 0.5, 9.0, 1.0, 3.0]))]
    for tr in traces:
        for _ in range(300):
            t0 = float(rng.uniform(0, 3 * tr.period_s))
            scale = float(rng.uniform(0.2, 3.0))
            mb = float(rng.choice([rng.uniform(0, 5), rng.uniform(0, 50), rng.uniform(0, 2000)]))
            dt = tr.transfer_s(mb, t0, scale)
            assert dt >= 0
            got = cum_megabits(tr, t0 + dt, scale) - cum_megabits(tr, t0, scale)
            assert got == pytest.approx(mb, rel=1e-9, abs=1e-9)


def test_transfer_s_monotone_in_size():
    sizes = np.linspace(0.1, 500, 200)
    times = [TR.transfer_s(float(m), 12.3, 1.0) for m in sizes]
    assert all(a < b for a, b in zip(times, times[1:]))


def test_mean_rate_over_whole_periods():
    """Moving k periods' worth of data always takes k periods, wherever it starts."""
    for t0 in (0.0, 7.0, 29.99, 49.0):
        assert TR.transfer_s(3 * 140.0, t0, 1.0) == pytest.approx(150.0, rel=1e-12)


# --------------------------------------------------------------------------- load_trace


def _csv(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_trace_ok(tmp_path):
    tr = load_trace(_csv(tmp_path, "time_s,mbps,note\n0,2,a\n10,5,b\n30,1,c\n"))
    assert tr.times_s.tolist() == [0.0, 10.0, 30.0]
    assert tr.mbps.tolist() == [2.0, 5.0, 1.0]
    assert tr.mean_mbps == pytest.approx(2.8)
    tr2 = load_trace(_csv(tmp_path, "mbps,time_s\n3,0\n4,0.5\n", "swapped.csv"))
    assert tr2.times_s.tolist() == [0.0, 0.5] and tr2.mbps.tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    "text,match",
    [
        ("t,rate\n0,1\n1,2\n", "header"),
        ("time_s\n0\n1\n", "header"),
        ("", "header"),
        ("time_s,mbps\n0,1\n1,2\n1,3\n", r":4: time_s must increase"),
        ("time_s,mbps\n0,1\n2,2\n1,3\n", r":4: time_s must increase"),
        ("time_s,mbps\n0,1\n1,-2\n", r":3: mbps must be finite and > 0"),
        ("time_s,mbps\n0,1\n1,0\n", "mbps must be finite"),
        ("time_s,mbps\n0,1\n1,inf\n", "mbps must be finite"),
        ("time_s,mbps\n0,1\nnan,2\n", "finite"),
        ("time_s,mbps\n0,1\n1,fast\n", r":3: time_s and mbps must be numbers"),
        ("time_s,mbps\n0,1\n1\n", "must be numbers"),
        ("time_s,mbps\n0,1\n", "at least 2 rows"),
        ("time_s,mbps\n", "at least 2 rows"),
        ("time_s,mbps\n1,1\n2,2\n", "start at time_s 0"),
    ],
)
def test_load_trace_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_trace(_csv(tmp_path, text))


def test_load_trace_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read trace"):
        load_trace(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- BandwidthModel


class FixedEps:
    """A stand-in for PerDeviceStream returning scripted draws."""

    def __init__(self, rows):
        self.rows = [np.asarray(r, dtype=float) for r in rows]

    def draw(self, r):
        return self.rows[r]

    def state(self):
        return {}

    def set_state(self, st):
        pass


def ar_model(n, phi=0.7, sigma=0.3, min_mbps=0.1, seed=0, mean=None, ratio=None, x0=None):
    mean = np.full(n, 10.0) if mean is None else mean
    ratio = np.full(n, 2.0) if ratio is None else ratio
    x0 = np.random.default_rng(seed + 99).standard_normal(n) if x0 is None else x0
    eps = PerDeviceStream(seed, "bw", n, dist="normal")
    return BandwidthModel(mean, ratio, [None] * n, np.zeros(n), phi, sigma, min_mbps, eps, x0)


def test_sigma_zero_rates_equal_mean():
    mean = np.array([1.0, 5.0, 25.0, 30.0])
    bw = ar_model(4, sigma=0.0, mean=mean, ratio=np.array([1.0, 2.0, 0.5, 3.0]))
    for r in range(5):
        bw.begin_round(r)
        np.testing.assert_array_equal(bw.up_mbps, mean)
        for d in range(4):
            assert bw.rate_mbps(d, 123.0, "up") == mean[d]
            assert bw.rate_mbps(d, 123.0, "down") == mean[d] * [1.0, 2.0, 0.5, 3.0][d]


def test_floor_applies():
    bw = ar_model(3, sigma=0.0, mean=np.array([0.5, 2.0, 8.0]), min_mbps=1.0)
    bw.begin_round(0)
    assert bw.up_mbps.tolist() == [1.0, 2.0, 8.0]


def test_ar1_recurrence_exact():
    n, phi, sigma = 3, 0.6, 0.25
    eps_rows = [[0.3, -1.0, 2.0], [1.0, 0.5, -0.5], [-2.0, 0.0, 0.1], [0.7, 0.7, 0.7]]
    x0 = np.array([1.0, -0.5, 0.0])
    mean = np.array([10.0, 20.0, 4.0])
    bw = BandwidthModel(mean, np.ones(n), [None] * n, np.zeros(n), phi, sigma, 0.01, FixedEps(eps_rows), x0)
    x = x0 * sigma / math.sqrt(1 - phi**2)  # stationary start
    np.testing.assert_allclose(bw.up_mbps, mean * np.exp(x), rtol=1e-14)
    bw.begin_round(0)  # round 0 keeps the stationary start
    np.testing.assert_allclose(bw.x, x, rtol=1e-14)
    for r in range(1, 4):
        bw.begin_round(r)
        x = phi * x + sigma * np.array(eps_rows[r])
        np.testing.assert_allclose(bw.x, x, rtol=1e-14)
        np.testing.assert_allclose(bw.up_mbps, np.maximum(0.01, mean * np.exp(x)), rtol=1e-14)


def test_ar1_stationary_statistics():
    n, phi, sigma, rounds = 4000, 0.7, 0.3, 12
    bw = ar_model(n, phi=phi, sigma=sigma, min_mbps=1e-9)
    sd = sigma / math.sqrt(1 - phi**2)
    xs = []
    for r in range(rounds):
        bw.begin_round(r)
        xs.append(np.log(bw.up_mbps / 10.0))
    xs = np.array(xs)
    for x in xs:  # stationary at every round, including round 0
        assert abs(x.mean()) < 4 * sd / math.sqrt(n)
        assert x.std() == pytest.approx(sd, rel=0.05)
    lag1 = np.mean([np.corrcoef(xs[r], xs[r + 1])[0, 1] for r in range(rounds - 1)])
    assert lag1 == pytest.approx(phi, abs=0.03)
    # median rate = B_bar
    assert np.median(bw.up_mbps) == pytest.approx(10.0, rel=0.05)


def test_device_trajectory_independent_of_fleet_size():
    x0 = np.random.default_rng(5).standard_normal(50)
    small, big = ar_model(5, x0=x0[:5]), ar_model(50, x0=x0)
    for r in range(40):
        small.begin_round(r)
        big.begin_round(r)
        np.testing.assert_array_equal(small.up_mbps, big.up_mbps[:5])


def test_data_time_ar():
    bw = ar_model(3, sigma=0.0, mean=np.array([10.0, 4.0, 25.0]), ratio=np.array([2.0, 1.0, 0.5]))
    bw.begin_round(0)
    size = 1_250_000  # 10 Mbit
    for d, (rate, ratio) in enumerate([(10.0, 2.0), (4.0, 1.0), (25.0, 0.5)]):
        for eta in (1.0, 0.6):
            assert bw.data_time_s(d, size, 7.0, "up", eta) == pytest.approx(8 * size / (rate * 1e6 * eta), rel=1e-12)
            assert bw.data_time_s(d, size, 7.0, "down", eta) == pytest.approx(
                8 * size / (rate * ratio * 1e6 * eta), rel=1e-12)


def test_traced_device_rate_and_data_time():
    n = 3
    traces = [TR, None, TR]
    offsets = np.array([0.0, 0.0, 15.0])
    mean = np.array([14.0, 10.0, 2.8])  # scale 5 for device 0, 1 for device 2
    bw = BandwidthModel(mean, np.array([1.0, 1.0, 0.5]), traces, offsets, 0.7, 0.3, 0.01,
                        PerDeviceStream(1, "bw", n, "normal"), np.zeros(n))
    bw.begin_round(0)
    assert bw.traced.tolist() == [True, False, True]
    assert bw.rate_mbps(0, 5.0, "up") == pytest.approx(10.0)  # 5 x 2
    assert bw.rate_mbps(0, 12.0, "up") == pytest.approx(25.0)  # 5 x 5
    assert bw.rate_mbps(0, 62.0, "up") == pytest.approx(25.0)  # periodic
    assert bw.rate_mbps(2, 0.0, "up") == pytest.approx(5.0)  # offset 15 -> segment 2 (rate 5)
    assert bw.rate_mbps(2, 20.0, "down") == pytest.approx(0.5 * 1.0)  # t+offset=35 -> rate 1, down x0.5
    # data time integrates the rescaled trace from t0 + offset
    mbit = 150.0
    size = mbit * 1e6 / 8
    assert bw.data_time_s(0, size, 5.0, "up", 1.0) == pytest.approx(TR.transfer_s(mbit, 5.0, 5.0), rel=1e-12)
    assert bw.data_time_s(0, size, 5.0, "up", 1.0) == pytest.approx(9.0, rel=1e-12)  # 50 at 10 + 100 at 25
    assert bw.data_time_s(2, size, 20.0, "down", 0.5) == pytest.approx(
        TR.transfer_s(mbit / 0.5, 35.0, 0.5), rel=1e-12)
    # small payloads: data_time == megabits / current rate
    for d, t in ((0, 1.0), (0, 15.0), (2, 0.0), (2, 20.0)):
        for direction in ("up", "down"):
            small = 1000.0
            assert bw.data_time_s(d, small, t, direction, 1.0) == pytest.approx(
                8 * small / 1e6 / bw.rate_mbps(d, t, direction), rel=1e-12)


def test_bandwidth_state_roundtrip():
    a = ar_model(6, seed=4)
    for r in range(10):
        a.begin_round(r)
    st = a.state()
    ref = [(a.begin_round(r), a.up_mbps.copy())[1] for r in range(10, 45)]
    b = ar_model(6, seed=4)
    b.set_state(st)
    got = [(b.begin_round(r), b.up_mbps.copy())[1] for r in range(10, 45)]
    np.testing.assert_array_equal(np.array(ref), np.array(got))


def test_traced_data_time_respects_rate_floor():
    """rate_mbps() and data_time_s() agree when a rescaled trace segment is below min_mbps (was a bug)."""
    n = 1
    # scale 0.1: segment rates 0.2, 0.5, 0.1 Mbit/s; floor 0.5
    bw = BandwidthModel(np.array([0.28]), np.ones(n), [TR], np.zeros(n), 0.7, 0.3, 0.5,
                        PerDeviceStream(1, "bw", n, "normal"), np.zeros(n))
    bw.begin_round(0)
    assert bw.rate_mbps(0, 35.0, "up") == pytest.approx(0.5)  # floored
    size = 1000.0  # 0.008 Mbit, well inside the segment
    assert bw.data_time_s(0, size, 35.0, "up", 1.0) == pytest.approx(8 * size / 1e6 / 0.5, rel=1e-9)

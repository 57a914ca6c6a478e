"""devices/rng.py and devices/dynamics.py: seeded per-device streams and the round-level processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from devices.dynamics import Availability, BackgroundLoad, Dropout, Dwell, PowerModeProcess
from devices.noise import noise_fraction, one_lag_split
from devices.rng import PerDeviceStream, generator, stream_key


REPO = Path(__file__).resolve().parents[2]


def draws(stream: PerDeviceStream, rounds: range) -> np.ndarray:
    return np.array([stream.draw(r).copy() for r in rounds])


# --------------------------------------------------------------------------- rng


def test_stream_key_is_stable_crc32():
    assert stream_key("power_mode") == stream_key("power_mode")
    assert stream_key("a") != stream_key("b")
    assert 0 <= stream_key("bandwidth") < 2**32
    assert stream_key("abc") == 0x352441C2  # crc32("abc"), independent of PYTHONHASHSEED


def test_generator_depends_on_seed_name_index_only():
    a = generator(1, "x", 3).random(5)
    assert np.array_equal(a, generator(1, "x", 3).random(5))
    _ = generator(1, "other", 0).random(100)  # creating other streams changes nothing
    assert np.array_equal(a, generator(1, "x", 3).random(5))
    assert not np.array_equal(a, generator(2, "x", 3).random(5))
    assert not np.array_equal(a, generator(1, "y", 3).random(5))
    assert not np.array_equal(a, generator(1, "x", 4).random(5))
    assert not np.array_equal(generator(1, "x").random(5), generator(1, "x", 0).random(5))


@pytest.mark.parametrize("dist", ["random", "normal"])
def test_same_seed_same_draws(dist):
    a = draws(PerDeviceStream(11, "s", 7, dist), range(70))
    b = draws(PerDeviceStream(11, "s", 7, dist), range(70))
    assert a.shape == (70, 7)
    np.testing.assert_array_equal(a, b)
    c = draws(PerDeviceStream(12, "s", 7, dist), range(70))
    assert not np.array_equal(a, c)
    d = draws(PerDeviceStream(11, "t", 7, dist), range(70))
    assert not np.array_equal(a, d)
    # the draws of different devices differ
    assert len({tuple(col) for col in a.T}) == 7


@pytest.mark.parametrize("dist", ["random", "normal"])
def test_device_draws_independent_of_fleet_size(dist):
    small = draws(PerDeviceStream(5, "s", 3, dist), range(100))
    big = draws(PerDeviceStream(5, "s", 40, dist), range(100))
    np.testing.assert_array_equal(small, big[:, :3])


@pytest.mark.parametrize("dist", ["random", "normal"])
def test_draws_independent_of_block_size(dist):
    ref = draws(PerDeviceStream(5, "s", 4, dist, block=32), range(100))
    for block in (1, 7, 100, 256):
        np.testing.assert_array_equal(draws(PerDeviceStream(5, "s", 4, dist, block=block), range(100)), ref)


def test_device_draws_match_its_generator():
    st = PerDeviceStream(9, "flag", 3, "random", block=8)
    got = draws(st, range(20))
    for i in range(3):
        np.testing.assert_array_equal(got[:, i], generator(9, "flag", i).random(20))
    st = PerDeviceStream(9, "z", 2, "normal", block=8)
    got = draws(st, range(20))
    np.testing.assert_array_equal(got[:, 1], generator(9, "z", 1).standard_normal(20))


def test_distributions():
    u = draws(PerDeviceStream(0, "u", 500, "random"), range(20))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.01)
    z = draws(PerDeviceStream(0, "z", 500, "normal"), range(20))
    assert z.mean() == pytest.approx(0.0, abs=0.02)
    assert z.std() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError):
        PerDeviceStream(0, "bad", 3, "uniform")


def test_out_of_order_rounds_raise():
    st = PerDeviceStream(0, "s", 3)
    with pytest.raises(ValueError, match="out of order"):
        st.draw(1)
    st.draw(0)
    with pytest.raises(ValueError, match="expected 1"):
        st.draw(0)
    with pytest.raises(ValueError, match="out of order"):
        st.draw(2)
    st.draw(1)  # still fine after the refusals
    st.draw(2)


@pytest.mark.parametrize("dist", ["random", "normal"])
@pytest.mark.parametrize("cut", [0, 1, 20, 31, 32, 33, 64])
def test_state_resume_exact(dist, cut):
    full = PerDeviceStream(3, "s", 5, dist, block=32)
    ref = draws(full, range(100))
    a = PerDeviceStream(3, "s", 5, dist, block=32)
    draws(a, range(cut))
    st = pickle.loads(pickle.dumps(a.state()))  # a checkpoint survives serialisation
    b = PerDeviceStream(3, "s", 5, dist, block=32)
    b.set_state(st)
    np.testing.assert_array_equal(draws(b, range(cut, 100)), ref[cut:])
    # the original keeps going identically too (state() is a snapshot, not a view)
    np.testing.assert_array_equal(draws(a, range(cut, 100)), ref[cut:])


def test_state_is_a_snapshot():
    a = PerDeviceStream(3, "s", 2, block=4)
    a.draw(0)
    st = a.state()
    later = draws(a, range(1, 10))
    b = PerDeviceStream(3, "s", 2, block=4)
    b.set_state(st)
    np.testing.assert_array_equal(draws(b, range(1, 10)), later)
    with pytest.raises(ValueError):
        b.set_state({**st, "gens": st["gens"][:1]})  # wrong number of devices


# --------------------------------------------------------------------------- power modes


def pm(kind, counts, initial=None, every=5, stay=0.8, seed=0):
    counts = np.asarray(counts)
    initial = np.zeros(len(counts), dtype=int) if initial is None else np.asarray(initial)
    return PowerModeProcess(kind, counts, initial, every, stay, PerDeviceStream(seed, "pm", len(counts)))


def run_modes(proc, rounds, start=0):
    cur, sw = [], []
    for r in range(start, rounds):
        prev = proc.current.copy()
        proc.begin_round(r)
        cur.append(proc.current.copy())
        sw.append(proc.switched.copy())
        np.testing.assert_array_equal(proc.switched, proc.current != prev)
    return np.array(cur), np.array(sw)


def test_fixed_never_switches():
    counts = np.array([5, 7, 1, 3] * 10)
    initial = np.array([4, 6, 0, 2] * 10)
    proc = pm("fixed", counts, initial)
    cur, sw = run_modes(proc, 50)
    assert not sw.any()
    assert (cur == initial).all()


def test_periodic_switches_only_every_n_rounds():
    n, every, rounds = 400, 5, 41
    counts = np.random.default_rng(0).integers(1, 8, n)
    proc = pm("periodic", counts, every=every)
    cur, sw = run_modes(proc, rounds)
    for r in range(rounds):
        if r == 0 or r % every:
            assert not sw[r].any(), r
            if r:
                np.testing.assert_array_equal(cur[r], cur[r - 1])
        else:
            assert sw[r].any(), r
    assert (cur >= 0).all() and (cur < counts).all()
    assert not sw[:, counts == 1].any() and (cur[:, counts == 1] == 0).all()


def test_periodic_draw_is_uniform_and_may_repeat():
    n = 4000
    counts = np.full(n, 5)
    proc = pm("periodic", counts, every=3)
    cur, sw = run_modes(proc, 4)
    new = cur[3]
    freq = np.bincount(new, minlength=5) / n
    np.testing.assert_allclose(freq, 0.2, atol=0.025)
    # uniform over all 5 (including the current one): about 1/5 stay put
    assert 1 - sw[3].mean() == pytest.approx(0.2, abs=0.025)


def test_periodic_uses_the_stream():
    counts = np.array([5, 5, 3])
    proc = pm("periodic", counts, every=2, seed=4)
    ref = PerDeviceStream(4, "pm", 3)
    for r in range(9):
        u = ref.draw(r)
        proc.begin_round(r)
        if r and r % 2 == 0:
            np.testing.assert_array_equal(proc.current, np.minimum((u * counts).astype(int), counts - 1))


@pytest.mark.parametrize("stay", [0.8, 0.5, 0.95])
def test_markov_stay_probability(stay):
    n, rounds = 1000, 30
    counts = np.full(n, 4)
    proc = pm("markov", counts, stay=stay)
    cur, sw = run_modes(proc, rounds)
    assert not sw[0].any()
    assert sw[1:].mean() == pytest.approx(1 - stay, abs=0.015)
    assert (cur >= 0).all() and (cur < 4).all()


def test_markov_moves_uniformly_to_other_modes():
    n = 6000
    counts = np.full(n, 4)
    initial = np.full(n, 2)
    proc = pm("markov", counts, initial, stay=0.0)
    proc.begin_round(0)
    proc.begin_round(1)
    assert proc.switched.all()
    freq = np.bincount(proc.current, minlength=4) / n
    assert freq[2] == 0.0
    np.testing.assert_allclose(freq[[0, 1, 3]], 1 / 3, atol=0.025)


def test_markov_single_mode_never_moves_and_two_modes_alternate():
    counts = np.array([1] * 50 + [2] * 50)
    proc = pm("markov", counts, stay=0.0)
    cur, sw = run_modes(proc, 12)
    assert not sw[:, :50].any()
    assert sw[1:, 50:].all()  # stay 0 with 2 modes: always flip
    assert (cur[1:, 50:] == (np.arange(1, 12) % 2)[:, None]).all()


def test_powermode_state_roundtrip():
    counts = np.array([3, 5, 7, 2])
    a = pm("markov", counts, stay=0.6, seed=8)
    run_modes(a, 10)
    st = pickle.loads(pickle.dumps(a.state()))
    ref, ref_sw = run_modes(a, 40, start=10)
    assert ref_sw.any()
    b = pm("markov", counts, stay=0.6, seed=8)
    b.set_state(st)
    np.testing.assert_array_equal(b.current, st["current"])
    got, got_sw = run_modes(b, 40, start=10)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_sw, ref_sw)


# --------------------------------------------------------------------------- background load


def test_lognormal_load():
    n = 5000
    bl = BackgroundLoad("lognormal", 0.0, 0.3, PerDeviceStream(2, "load", n, "normal"), n)
    np.testing.assert_array_equal(bl.factor, np.ones(n))  # before the first round
    bl.begin_round(0)
    assert np.median(bl.factor) == pytest.approx(1.0, abs=0.02)
    assert np.log(bl.factor).std() == pytest.approx(0.3, rel=0.05)
    assert (bl.factor > 0).all()
    bl.begin_round(1)
    assert np.median(bl.factor) == pytest.approx(1.0, abs=0.02)


def test_lognormal_load_is_exp_of_stream():
    n = 4
    bl = BackgroundLoad("lognormal", 0.1, 0.5, PerDeviceStream(2, "load", n, "normal"), n)
    ref = PerDeviceStream(2, "load", n, "normal")
    for r in range(5):
        bl.begin_round(r)
        np.testing.assert_allclose(bl.factor, np.exp(0.1 + 0.5 * ref.draw(r)), rtol=1e-15)


def test_no_load():
    bl = BackgroundLoad("none", 0.0, 0.3, PerDeviceStream(2, "load", 6, "normal"), 6)
    for r in range(3):
        bl.begin_round(r)
        np.testing.assert_array_equal(bl.factor, np.ones(6))


def test_load_state_roundtrip():
    n = 3
    a = BackgroundLoad("lognormal", 0.0, 0.3, PerDeviceStream(2, "load", n, "normal"), n)
    for r in range(5):
        a.begin_round(r)
    st = a.state()
    ref = [(a.begin_round(r), a.factor.copy())[1] for r in range(5, 50)]
    b = BackgroundLoad("lognormal", 0.0, 0.3, PerDeviceStream(2, "load", n, "normal"), n)
    b.set_state(st)
    np.testing.assert_array_equal(b.factor, st["factor"])
    np.testing.assert_array_equal(np.array([(b.begin_round(r), b.factor.copy())[1] for r in range(5, 50)]),
                                  np.array(ref))


# --------------------------------------------------------------------------- dropout


def make_dropout(prob, seed=0):
    n = len(prob)
    return Dropout(np.asarray(prob, dtype=float), PerDeviceStream(seed, "drop", n), PerDeviceStream(seed, "phase", n))


def test_dropout_frequency():
    n, rounds = 2000, 20
    dr = make_dropout(np.full(n, 0.1))
    rate = []
    for r in range(rounds):
        dr.begin_round(r)
        rate.append(dr.drops.mean())
        assert (dr.fraction >= 0).all() and (dr.fraction < 1).all()
    assert np.mean(rate) == pytest.approx(0.1, abs=0.01)


def test_dropout_per_device_probabilities():
    prob = np.array([0.0, 1.0] * 50 + [0.5] * 2000)
    dr = make_dropout(prob)
    hits = np.zeros(len(prob))
    for r in range(10):
        dr.begin_round(r)
        hits += dr.drops
    assert (hits[:100:2] == 0).all()
    assert (hits[1:100:2] == 10).all()
    assert hits[100:].mean() / 10 == pytest.approx(0.5, abs=0.02)


def test_dropout_fraction_and_flag_streams():
    n = 5
    dr = make_dropout(np.full(n, 0.3), seed=6)
    flag, phase = PerDeviceStream(6, "drop", n), PerDeviceStream(6, "phase", n)
    for r in range(40):
        dr.begin_round(r)
        np.testing.assert_array_equal(dr.drops, flag.draw(r) < 0.3)
        np.testing.assert_array_equal(dr.fraction, phase.draw(r))


def test_dropout_state_roundtrip():
    a = make_dropout(np.full(4, 0.4), seed=1)
    for r in range(7):
        a.begin_round(r)
    st = pickle.loads(pickle.dumps(a.state()))
    ref = [(a.begin_round(r), a.drops.copy(), a.fraction.copy())[1:] for r in range(7, 60)]
    b = make_dropout(np.full(4, 0.4), seed=1)
    b.set_state(st)
    got = [(b.begin_round(r), b.drops.copy(), b.fraction.copy())[1:] for r in range(7, 60)]
    for (d1, f1), (d2, f2) in zip(ref, got):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(f1, f2)


# --------------------------------------------------------------------------- availability


def test_always():
    av = Availability("always", 4)
    assert av.window_at(2, 1e9) == (-np.inf, np.inf)
    assert av.available_mask(-5.0).all() and av.available_mask(-5.0).shape == (4,)
    assert av.window_end(0, 3.0) == np.inf


def test_periodic_full_on_fraction_is_always():
    av = Availability("periodic", 3, period_s=100.0, on_fraction=1.0, phase_s=np.array([1.0, 2.0, 3.0]))
    assert av.window_at(1, 55.0) == (-np.inf, np.inf)
    assert av.available_mask(55.0).all()


def test_periodic_windows_hand():
    av = Availability("periodic", 2, period_s=100.0, on_fraction=0.25, phase_s=np.array([12.5, 90.0]))
    # device 0: on in [12.5 + 100 k, 37.5 + 100 k)
    assert av.window_at(0, 12.5) == (12.5, 37.5)
    assert av.window_at(0, 20.0) == (12.5, 37.5)
    assert av.window_at(0, 37.5) is None  # half-open
    assert av.window_at(0, 5.0) is None
    assert av.window_at(0, 230.0) == (212.5, 237.5)
    assert av.window_at(0, -80.0) == (-87.5, -62.5)
    # device 1: on in [90 + 100 k, 115 + 100 k): wraps over multiples of the period
    assert av.window_at(1, 10.0) == (-10.0, 15.0)
    assert av.window_at(1, 95.0) == (90.0, 115.0)
    assert av.window_at(1, 50.0) is None
    assert av.available_mask(20.0).tolist() == [True, False]
    assert av.available_mask(100.0).tolist() == [False, True]
    assert av.available_mask(37.5).tolist() == [False, False]
    assert av.window_end(0, 20.0) == 37.5
    assert av.window_end(0, 50.0) == 50.0  # off: returns t


def test_periodic_mask_consistent_with_windows():
    n = 60
    rng = np.random.default_rng(1)
    period, on = 3600.0, 0.3
    phase = rng.uniform(0, period, n)
    av = Availability("periodic", n, period_s=period, on_fraction=on, phase_s=phase)
    on_count = 0
    for t in rng.uniform(-5 * period, 20 * period, 300):
        mask = av.available_mask(float(t))
        for d in range(n):
            w = av.window_at(d, float(t))
            assert mask[d] == (w is not None)
            if w is not None:
                start, end = w
                assert start <= t < end
                assert end - start == pytest.approx(on * period)
                assert ((start - phase[d]) / period) == pytest.approx(round((start - phase[d]) / period), abs=1e-9)
        on_count += mask.sum()
    assert on_count / (300 * n) == pytest.approx(on, abs=0.03)


def test_trace_intervals():
    iv = [np.array([[0.0, 10.0], [20.0, 30.0]]), np.zeros((0, 2)), np.array([[5.0, 6.0]])]
    av = Availability("trace", 3, intervals=iv)
    assert av.window_at(0, 0.0) == (0.0, 10.0)
    assert av.window_at(0, 9.99) == (0.0, 10.0)
    assert av.window_at(0, 10.0) is None
    assert av.window_at(0, 15.0) is None
    assert av.window_at(0, 25.0) == (20.0, 30.0)
    assert av.window_at(0, 30.0) is None
    assert av.window_at(0, -1.0) is None
    assert av.window_at(0, 1e6) is None
    assert av.window_at(1, 5.0) is None  # no intervals: never on
    assert av.window_at(2, 5.5) == (5.0, 6.0)
    assert av.available_mask(5.5).tolist() == [True, False, True]
    assert av.available_mask(25.0).tolist() == [True, False, False]
    assert av.available_mask(15.0).tolist() == [False, False, False]
    assert av.window_end(0, 21.0) == 30.0
    assert av.window_end(0, 12.0) == 12.0
    for t in np.linspace(-2, 35, 149):
        mask = av.available_mask(float(t))
        assert mask.tolist() == [av.window_at(d, float(t)) is not None for d in range(3)]


# --------------------------------------------------------------------------- persistent load, dwell times, noise


def ar1(n, phi, sigma=0.3, mu=0.0, seed=2):
    return BackgroundLoad("ar1", mu, sigma, PerDeviceStream(seed, "load", n, "normal"), n, phi)


def log_loads(bl, rounds):
    return np.array([(bl.begin_round(r), np.log(bl.factor).copy())[1] for r in range(rounds)])


def test_ar1_with_phi_zero_is_the_iid_lognormal_draw_for_draw():
    n = 7
    a, b = ar1(n, 0.0, 0.4, 0.1), BackgroundLoad("lognormal", 0.1, 0.4, PerDeviceStream(2, "load", n, "normal"), n)
    for r in range(40):
        a.begin_round(r)
        b.begin_round(r)
        np.testing.assert_allclose(a.factor, b.factor, rtol=1e-15)


def test_ar1_recursion_on_the_stream():
    n, phi, sigma, mu = 5, 0.9, 0.3, -0.2
    bl, ref = ar1(n, phi, sigma, mu), PerDeviceStream(2, "load", n, "normal")
    x = None
    for r in range(50):
        z = ref.draw(r)
        x = z.copy() if r == 0 else phi * x + np.sqrt(1 - phi * phi) * z
        bl.begin_round(r)
        np.testing.assert_allclose(bl.factor, np.exp(mu + sigma * x), rtol=1e-12)


@pytest.mark.parametrize("phi", [0.5, 0.9, 0.98])
def test_ar1_is_stationary_with_the_lognormal_spread_and_correlation_phi(phi):
    n, sigma, mu = 4000, 0.3, 0.1
    y = log_loads(ar1(n, phi, sigma, mu), 30)
    for r in (0, 29):  # the same law in the first round and later: it starts stationary
        assert y[r].mean() == pytest.approx(mu, abs=0.02)
        assert y[r].std() == pytest.approx(sigma, rel=0.05)
    corr = np.corrcoef(y[:-1].ravel(), y[1:].ravel())[0, 1]
    assert corr == pytest.approx(phi, abs=0.02)
    innov = (y[1:] - mu) - phi * (y[:-1] - mu)
    assert innov.std() == pytest.approx(sigma * np.sqrt(1 - phi * phi), rel=0.05)


def test_ar1_predicted_factor_and_state_roundtrip():
    n, phi = 4, 0.8
    a = ar1(n, phi, 0.3, 0.05)
    for r in range(6):
        a.begin_round(r)
    np.testing.assert_allclose(a.predicted_factor(), np.exp(0.05 + 0.3 * phi * a.x))
    st = pickle.loads(pickle.dumps(a.state()))
    ref = log_loads_from(a, 6, 40)
    b = ar1(n, phi, 0.3, 0.05)
    b.set_state(st)
    np.testing.assert_array_equal(log_loads_from(b, 6, 40), ref)
    iid = BackgroundLoad("lognormal", 0.2, 0.3, PerDeviceStream(2, "load", n, "normal"), n)
    np.testing.assert_allclose(iid.predicted_factor(), np.exp(0.2))
    assert "x" not in iid.state()  # an i.i.d. load's checkpoint holds what it always held


def log_loads_from(bl, start, stop):
    return np.array([(bl.begin_round(r), bl.factor.copy())[1] for r in range(start, stop)])


@pytest.mark.parametrize("kind,kw,mean", [("geometric", {"mean": 25.0}, 25.0), ("uniform", {"low": 10, "high": 30}, 20.0),
                                          ("fixed", {"mean": 12.0}, 12.0)])
def test_dwell_draws_have_the_stated_law(kind, kw, mean):
    dw = Dwell(kind, **kw)
    d = dw.draw(np.random.default_rng(0).random(200_000))
    assert d.min() >= 1 and d.dtype.kind == "i"
    assert d.mean() == pytest.approx(mean, rel=0.01)
    assert dw.mean_rounds == pytest.approx(mean)
    if kind == "uniform":
        assert d.min() == 10 and d.max() == 30
        np.testing.assert_allclose(np.bincount(d, minlength=31)[10:] / len(d), 1 / 21, atol=0.002)
    if kind == "fixed":
        assert (d == 12).all()
    if kind == "geometric":  # P(D = 1) = 1/mean
        assert (d == 1).mean() == pytest.approx(1 / 25, abs=0.002)


def test_dwell_residual_is_the_stationary_renewal_residual():
    u = np.random.default_rng(1).random(200_000)
    fixed = Dwell("fixed", mean=10).draw_residual(u)
    np.testing.assert_allclose(np.bincount(fixed, minlength=11)[1:] / len(u), 0.1, atol=0.003)  # uniform 1..10
    uni = Dwell("uniform", low=2, high=4).draw_residual(u)  # P(R=k) = P(D>=k)/3: 1/3, 1/3, 2/9, 1/9
    np.testing.assert_allclose(np.bincount(uni, minlength=5)[1:] / len(u), [1 / 3, 1 / 3, 2 / 9, 1 / 9], atol=0.004)
    geo = Dwell("geometric", mean=8).draw_residual(u)  # memoryless: the same law as D
    np.testing.assert_array_equal(geo, Dwell("geometric", mean=8).draw(u))


def dwell_pm(counts, dwell, initial=None, seed=0):
    counts = np.asarray(counts)
    initial = np.zeros(len(counts), dtype=int) if initial is None else np.asarray(initial)
    return PowerModeProcess("dwell", counts, initial, 5, 0.8, PerDeviceStream(seed, "pm", len(counts)), dwell,
                            PerDeviceStream(seed, "pm.dwell", len(counts)))


@pytest.mark.parametrize("dwell", [Dwell("geometric", mean=15), Dwell("uniform", low=8, high=20), Dwell("fixed", mean=10)])
def test_dwell_modes_persist_for_their_dwell_time_then_move(dwell):
    n, rounds = 120, 1500  # long, so that dwells cut by the window's ends bias the mean little
    counts = np.full(n, 4)
    cur, sw = run_modes(dwell_pm(counts, dwell), rounds)
    assert not sw[0].any()
    assert sw[1:].mean() == pytest.approx(1 / dwell.mean_rounds, rel=0.08)  # one switch per dwell
    lengths = [b - a for d in range(n) for a, b in zip(*[np.flatnonzero(sw[:, d])[k:] for k in (0, 1)])]
    assert np.mean(lengths) == pytest.approx(dwell.mean_rounds, rel=0.05)  # complete dwells between switches
    if dwell.kind != "geometric":
        assert min(lengths) >= (dwell.low if dwell.kind == "uniform" else 10)
        assert max(lengths) <= (dwell.high if dwell.kind == "uniform" else 10)
    moved = np.flatnonzero(sw[1:].ravel())
    assert (cur[1:].ravel()[moved] != cur[:-1].ravel()[moved]).all()  # a switch always changes mode


def test_dwell_single_mode_never_moves_and_state_roundtrips():
    counts = np.array([1, 3, 5, 2] * 5)
    a = dwell_pm(counts, Dwell("geometric", mean=3), seed=3)
    run_modes(a, 10)
    st = pickle.loads(pickle.dumps(a.state()))
    ref, ref_sw = run_modes(a, 60, start=10)
    assert ref_sw.any() and not ref_sw[:, counts == 1].any()
    b = dwell_pm(counts, Dwell("geometric", mean=3), seed=3)
    b.set_state(st)
    got, got_sw = run_modes(b, 60, start=10)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_sw, ref_sw)


def test_markov_draws_are_those_of_the_original_rule():
    """The markov kind after the dwell refactor: the original inline rule, draw for draw."""
    counts, stay = np.array([4, 3, 1, 6, 2] * 20), 0.7
    proc, ref = pm("markov", counts, stay=stay, seed=9), PerDeviceStream(9, "pm", len(counts))
    cur = np.zeros(len(counts), dtype=np.int64)
    for r in range(60):
        u = ref.draw(r)
        if r:
            move = (u >= stay) & (counts > 1)
            v = (u - stay) / (1.0 - stay)
            k = np.minimum((v * (counts - 1)).astype(np.int64), np.maximum(counts - 2, 0))
            cur = np.where(move, np.where(k >= cur, k + 1, k), cur)
        proc.begin_round(r)
        np.testing.assert_array_equal(proc.current, cur)


def test_one_lag_noise_fraction_of_known_processes():
    rng = np.random.default_rng(4)
    n, rounds, phi = 200, 1000, 0.8  # long: the per-device mean biases the slope by about -(1 + phi) / rounds
    assert one_lag_split(rng.standard_normal((n, rounds))).noise_fraction == pytest.approx(1.0, abs=0.01)
    ident = np.repeat(rng.standard_normal((n, 1)), rounds, axis=1)
    assert one_lag_split(ident).noise_fraction == 0.0  # device identity alone: all persistent
    x = np.empty((n, rounds))
    x[:, 0] = rng.standard_normal(n)
    for r in range(1, rounds):
        x[:, r] = phi * x[:, r - 1] + np.sqrt(1 - phi * phi) * rng.standard_normal(n)
    lag = one_lag_split(x)
    assert lag.slope == pytest.approx(phi, abs=0.01)
    assert lag.noise_fraction == pytest.approx(1 - phi * phi, abs=0.01)
    assert noise_fraction(x, x) == 0.0 and noise_fraction(np.ones(5), np.zeros(5)) == 0.0
    with pytest.raises(ValueError):
        one_lag_split(np.ones((3, 1)))


def world(load, power_mode, sigma_log=0.0, phi_bw=0.7, classes=None):
    from sim.scenario import Scenario

    return Scenario.model_validate({
        "seed": 5, "training": {"rounds": 120},
        "fleet": {"groups": [{"type": "tx2", "count": 30}, {"type": "xavier_nx", "count": 30, "placement": "near"}]},
        "network": {"classes": classes or {"mid": {"mbps": [8, 15]}, "near": {"mbps": [20, 30]}},
                    "fluctuation": {"phi": phi_bw, "sigma_log": sigma_log}},
        "dynamics": {"background_load": load, "power_mode": power_mode}})


def state_noise(sc):
    from devices.plan import Plan
    from sim.fleet import build_workload, round_time_noise

    w = build_workload(sc, None)
    return round_time_noise(sc, None, w, Plan(prune_ratio=0.3, lora_rank=8, lora_layers=None, local_steps=20, batch_size=16),
                            0.01, 1.0)


def test_noise_fraction_of_scenarios_orders_the_dynamics():
    fixed = {"kind": "fixed", "initial": "default"}
    still = state_noise(world({"kind": "none"}, fixed))
    assert still.noise_fraction == 0.0 and np.isnan(still.yhat[:, 0]).all()
    np.testing.assert_allclose(still.yhat[:, 1:], still.y[:, 1:], rtol=1e-12)  # nothing changes: all predicted
    iid = state_noise(world({"kind": "lognormal", "sigma": 0.3}, fixed)).noise_fraction
    persistent = state_noise(world({"kind": "ar1", "sigma": 0.3, "phi": 0.9}, fixed)).noise_fraction
    # the same marginal spread; the persistent load leaves about (1 - phi^2) of its share as noise
    assert 0 < persistent < 0.35 * iid
    drift = state_noise(world({"kind": "none"}, {"kind": "dwell", "dwell_rounds": {"mean": 30}})).noise_fraction
    churn = state_noise(world({"kind": "none"}, {"kind": "markov", "stay_prob": 0.5})).noise_fraction
    assert 0 < drift < churn
    bw = state_noise(world({"kind": "none"}, fixed, sigma_log=0.3, phi_bw=0.5))
    assert 0 < bw.noise_fraction < 1 and (one_lag_split(bw.y).noise_fraction >= bw.noise_fraction - 0.02)


def test_noise_trajectory_is_the_runs_own():
    """y uses the fleet's named streams: the same scenario gives the same trajectory, another seed another."""
    sc = world({"kind": "ar1", "sigma": 0.3, "phi": 0.9}, {"kind": "dwell", "dwell_rounds": {"mean": 10}})
    a, b = state_noise(sc), state_noise(sc)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, state_noise(sc.model_copy(update={"seed": 6})).y)


def test_drifting_world_resumes_from_a_checkpoint_identically(tmp_path):
    """Dwell counters and AR(1) load states go into checkpoints: a resumed run equals an uninterrupted one."""
    from sim import checkpoint as ckpt
    from sim.loader import load_scenario, scenario_digest
    from sim.runner import simulate

    sc, base = load_scenario(REPO / "scenarios" / "paper-fleet-80-drifting.yaml",
                             ["training.rounds=12", "dynamics.power_mode.dwell_rounds.mean=3",
                              "algorithm={name: fedspine, params: {prune_target: 0.3}}"])
    path, digest = tmp_path / "checkpoint.bin", scenario_digest(sc)

    def save_at_7(sim, next_round):
        if next_round == 7:
            ckpt.save(path, sim, next_round, digest)

    _, ref = simulate(sc, base, checkpoint=save_at_7)
    assert (ref.device_rounds.groupby("device_id", observed=True)["power_mode"].nunique() > 1).any()  # modes switched
    _, resumed = simulate(sc, base, resume_from=path)
    for name in ("rounds", "device_rounds"):
        a, b = getattr(ref, name), getattr(resumed, name)
        assert a.drop(columns=[c for c in a.columns if "host" in c]).equals(
            b.drop(columns=[c for c in b.columns if "host" in c])), name


def test_new_keys_leave_existing_scenarios_digest_alone():
    """dwell_rounds and phi are dropped from the resolved scenario where their kind is not used."""
    from sim.loader import load_scenario, resolved_dict

    sc, _ = load_scenario(REPO / "scenarios" / "paper-fleet-80.yaml")
    dyn = resolved_dict(sc)["dynamics"]
    assert "dwell_rounds" not in dyn["power_mode"] and "phi" not in dyn["background_load"]
    drifting, _ = load_scenario(REPO / "scenarios" / "paper-fleet-80-drifting.yaml")
    dyn = resolved_dict(drifting)["dynamics"]
    assert dyn["power_mode"]["dwell_rounds"]["mean"] == 30 and dyn["background_load"]["phi"] == 0.95


def test_bad_dwell_range_is_one_clear_line():
    from sim.scenario import ScenarioError
    from sim.loader import validate

    fleet = {"groups": [{"type": "tx2", "count": 2}]}
    with pytest.raises(ScenarioError) as e:
        validate({"fleet": fleet, "dynamics": {"power_mode": {"kind": "dwell",
                                                              "dwell_rounds": {"kind": "uniform", "low": 9, "high": 3}}}})
    assert "dynamics.power_mode.dwell_rounds.low: 9 > high 3; allowed: low <= high" in str(e.value).splitlines()
    with pytest.raises(ScenarioError, match="dynamics.background_load.phi"):
        validate({"fleet": fleet, "dynamics": {"background_load": {"kind": "ar1", "phi": 1.0}}})


def test_quickstart_run_id_survives_the_learning_device_rename():
    """learning.compute_device became learning.device (+ autocast) in issue 21: the quickstart keeps the
    digest it had before (bd92a790...), the old key still loads, and a non-default device changes it."""
    from sim.loader import load_scenario, resolved_dict, scenario_digest

    def digest(*sets):
        return scenario_digest(load_scenario(REPO / "scenarios" / "quickstart.yaml", list(sets))[0])

    assert digest().startswith("bd92a790")
    assert digest("learning.compute_device=cpu") == digest()
    assert digest("learning.device=auto") != digest()
    learning = resolved_dict(load_scenario(REPO / "scenarios" / "quickstart.yaml")[0])["learning"]
    assert learning["device"] == "cpu" and "autocast" not in learning and "compute_device" not in learning


def test_lora_scaling_key_leaves_the_digest_alone_until_used():
    from sim.loader import load_scenario, resolved_dict, scenario_digest

    def digest(*sets):
        return scenario_digest(load_scenario(REPO / "scenarios" / "quickstart.yaml", list(sets))[0])

    assert digest("learning.lora_scaling=standard") == digest()
    assert digest("learning.lora_scaling=rslora") != digest()
    assert "lora_scaling" not in resolved_dict(load_scenario(REPO / "scenarios" / "quickstart.yaml")[0])["learning"]

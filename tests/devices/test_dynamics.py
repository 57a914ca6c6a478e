"""devices/rng.py and devices/dynamics.py: seeded per-device streams and the round-level processes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from devices.dynamics import Availability, BackgroundLoad, Dropout, PowerModeProcess
from devices.rng import PerDeviceStream, generator, stream_key


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

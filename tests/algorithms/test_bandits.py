"""algorithms/bandits: hand-computed indices, regret behaviour, feasibility, determinism, state.

Hand values below are written out from the formulas in the module docstrings (powers of λ, explicit
window contents), not computed with the modules' own code paths.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from algorithms.bandits import (
    BANDITS,
    DUCB,
    EXP3,
    SUCB,
    SWUCB,
    UCB1,
    Dim,
    EpsilonGreedy,
    GaussianThompson,
    make_bandit,
)

PLAYS = [0, 1, 0, 0, 1]
REWARDS = [1.0, 0.0, 0.5, 1.0, 0.2]


def feed(bandit, plays=PLAYS, rewards=REWARDS):
    for a, r in zip(plays, rewards):
        bandit.update(a, r)
    return bandit


def run_bernoulli(bandit, means, steps, rng):
    """Plays ``steps`` rounds; returns the arms chosen."""
    arms = np.empty(steps, dtype=int)
    for t in range(steps):
        a = bandit.select()
        bandit.update(a, float(rng.random() < means[a]))
        arms[t] = a
    return arms


# -- hand-computed indices ---------------------------------------------------------------------------

def test_ucb1_index_by_hand():
    b = feed(UCB1(2, np.random.default_rng(0), exploration=1.0))
    t = 5
    want = [(1.0 + 0.5 + 1.0) / 3 + math.sqrt(2 * math.log(t) / 3),
            (0.0 + 0.2) / 2 + math.sqrt(2 * math.log(t) / 2)]
    np.testing.assert_allclose(b.indices(), want, rtol=0, atol=1e-12)
    b2 = feed(UCB1(2, np.random.default_rng(0), exploration=0.5))
    assert b2.indices()[1] == pytest.approx(0.1 + 0.5 * math.sqrt(2 * math.log(5) / 2), abs=1e-12)


def test_ducb_index_by_hand():
    lam, xi, B = 0.9, 0.6, 1.0
    b = feed(DUCB(2, np.random.default_rng(0), discount=lam, xi=xi, bound=B))
    # plays at s = 1..5, t = 5: weight of play s is λ^(5 − s)
    n0 = lam**4 + lam**2 + lam**1            # arm 0 played at s = 1, 3, 4
    s0 = 1.0 * lam**4 + 0.5 * lam**2 + 1.0 * lam**1
    n1 = lam**3 + 1.0                        # arm 1 played at s = 2, 5
    s1 = 0.0 * lam**3 + 0.2
    n = n0 + n1
    want = [s0 / n0 + 2 * B * math.sqrt(xi * math.log(n) / n0),
            s1 / n1 + 2 * B * math.sqrt(xi * math.log(n) / n1)]
    np.testing.assert_allclose(b.n_disc, [n0, n1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.indices(), want, rtol=0, atol=1e-12)


def test_ducb_untried_means_never_played():
    b = DUCB(3, np.random.default_rng(0), discount=0.5)
    for _ in range(30):
        b.update(0, 1.0)
    b.update(1, 0.0)
    assert np.isinf(b.indices()[2]) and np.isfinite(b.indices()[:2]).all()
    assert all(b.select() == 2 for _ in range(5))     # the never-played arm comes first


def test_swucb_index_by_hand():
    W, xi, B = 3, 0.6, 1.0
    b = feed(SWUCB(2, np.random.default_rng(0), window=W, xi=xi, bound=B))
    # window = the last 3 plays: (0, 0.5), (0, 1.0), (1, 0.2); t = 5 so ln(min(5, 3)) = ln 3
    want = [(0.5 + 1.0) / 2 + B * math.sqrt(xi * math.log(3) / 2),
            0.2 / 1 + B * math.sqrt(xi * math.log(3) / 1)]
    np.testing.assert_allclose(b.indices(), want, rtol=0, atol=1e-12)
    # an arm that left the window counts as untried again and is played first
    b2 = feed(SWUCB(2, np.random.default_rng(0), window=W), [0, 1, 0, 0, 0], REWARDS)
    assert np.isinf(b2.indices()[1])
    assert b2.indices()[0] == pytest.approx((0.5 + 1.0 + 0.2) / 3 + math.sqrt(0.6 * math.log(3) / 3),
                                            abs=1e-12)
    assert b2.select() == 1


# -- behaviour ---------------------------------------------------------------------------------------

def test_ucb1_regret_is_sublinear():
    means = np.array([0.3, 0.5, 0.7])
    checkpoints = [500, 1000, 2000, 4000]
    regret = np.zeros(len(checkpoints))
    for seed in range(5):
        arms = run_bernoulli(UCB1(3, np.random.default_rng(seed)), means, checkpoints[-1],
                             np.random.default_rng(100 + seed))
        cum = np.cumsum(means.max() - means[arms])
        regret += [cum[T - 1] for T in checkpoints]
    regret /= 5
    assert regret[-1] / regret[1] < 2.5                   # T=4000 vs T=1000 (linear would be 4)
    per_step = regret / np.array(checkpoints)
    assert np.all(np.diff(per_step) < 0)


def switching_total(make, phase, T: int = 2000, seeds: int = 5) -> float:
    """Mean (over seeds) total Bernoulli reward of ``make(rng)`` with arm means ``phase(t)``."""
    out = 0.0
    for seed in range(seeds):
        env = np.random.default_rng(200 + seed)
        b = make(np.random.default_rng(seed))
        for t in range(T):
            a = b.select()
            r = float(env.random() < phase(t)[a])
            b.update(a, r)
            out += r
    return out / seeds


def test_discounted_and_windowed_ucb_beat_ucb1_on_a_switch():
    # The best arm collapses at the midpoint (0.9 -> 0.1) while the other stays at 0.5: UCB1's
    # long-run mean of arm 0 stays above 0.5 for ~1000 more plays. (On a plain swap, 0.8/0.2 ->
    # 0.2/0.8, UCB1 recovers within a few dozen plays because the under-sampled arm's mean moves
    # fast, and D-UCB's larger bonus 2B sqrt(...) costs more than it gains.)
    def phase(t: int) -> tuple[float, float]:
        return (0.9, 0.5) if t < 1000 else (0.1, 0.5)

    ucb1 = switching_total(lambda rng: UCB1(2, rng), phase)
    ducb = switching_total(lambda rng: DUCB(2, rng, discount=0.98), phase)
    swucb = switching_total(lambda rng: SWUCB(2, rng, window=100), phase)
    assert ducb > ucb1 + 30 and swucb > ucb1 + 30


@pytest.mark.parametrize("make", [lambda rng: GaussianThompson(3, rng),
                                  lambda rng: EpsilonGreedy(3, rng, epsilon=0.1),
                                  lambda rng: EpsilonGreedy(3, rng, epsilon=1.0, decay="inverse_t"),
                                  lambda rng: EXP3(3, rng, gamma=0.1)])
def test_best_arm_is_played_most(make):
    arms = run_bernoulli(make(np.random.default_rng(3)), [0.1, 0.5, 0.9], 1500,
                         np.random.default_rng(4))
    assert np.bincount(arms, minlength=3).argmax() == 2


def test_exp3_probabilities_sum_to_one_over_feasible_arms():
    b = EXP3(5, np.random.default_rng(0), gamma=0.2)
    rng = np.random.default_rng(1)
    for _ in range(200):
        mask = rng.random(5) < 0.6
        mask[rng.integers(5)] = True
        p = b.probabilities(mask)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(p[~mask] == 0) and np.all(p[mask] >= 0.2 / mask.sum() - 1e-15)
        a = b.select(mask)
        b.update(a, rng.random())
    assert b.indices().sum() == pytest.approx(1.0, abs=1e-12)


def test_egreedy_decay_schedule():
    b = EpsilonGreedy(4, np.random.default_rng(0), epsilon=0.5, decay="inverse_t")
    assert b.current_epsilon() == 1.0                     # min(1, 0.5 * 4 / 1)
    feed(b, [0, 1, 2, 3, 0], [0.1] * 5)
    assert b.current_epsilon() == pytest.approx(0.5 * 4 / 6)


# -- feasibility -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BANDITS)
def test_feasibility_mask_is_honoured(name):
    K = 6
    b = make_bandit(name, K, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(200):
        mask = rng.random(K) < 0.4
        mask[rng.integers(K)] = True
        a = b.select(mask)
        assert mask[a]
        b.update(a, rng.random())
    with pytest.raises(ValueError, match="feasible"):
        b.select(np.zeros(K, dtype=bool))
    with pytest.raises(ValueError, match="feasible"):
        b.select(np.ones(K + 1, dtype=bool))


def test_sucb_lower_is_honoured():
    dims = [Dim(0.0, 1.0), Dim(values=(4, 8, 16, 32))]
    for play in ("centre", "uniform"):
        s = SUCB(dims, np.random.default_rng(0), play=play)
        rng = np.random.default_rng(1)
        for _ in range(200):
            lower = [float(rng.uniform(0, 1)) if rng.random() < 0.8 else None,
                     float(rng.choice([3.0, 5.0, 8.0, 20.0])) if rng.random() < 0.8 else None]
            p, cid = s.select(lower)
            assert all(lo is None or x >= lo for x, lo in zip(p, lower))
            assert p[1] in (4, 8, 16, 32)
            cell = next(c for c in s.leaves() if c.id == cid)
            assert cell.bounds[0][0] <= p[0] <= cell.bounds[0][1]
            s.update(cid, rng.random())
    with pytest.raises(ValueError, match="feasible"):
        s.select([None, 33.0])


# -- S-UCB refinement --------------------------------------------------------------------------------

def test_sucb_refines_where_it_plays():
    values = (4.0, 8.0, 16.0, 32.0)
    s = SUCB([Dim(0.0, 1.0), Dim(values=values)], np.random.default_rng(0), discount=0.95)
    assert len(s.leaves()) == 8 and all(c.depth == 0 for c in s.leaves())
    env = np.random.default_rng(1)
    plays: dict[int, int] = {}
    for _ in range(400):
        p, cid = s.select()
        idx = values.index(p[1])
        r = float(np.clip(1 - abs(p[0] - 0.9) - 0.1 * abs(idx - 3) + env.normal(0, 0.05), 0, 1))
        s.update(cid, r)
        plays[cid] = plays.get(cid, 0) + 1
    leaves = s.leaves()
    assert len(leaves) > 8                                # splits happened
    near = [c.depth for c in leaves if c.bounds[0][0] <= 0.9 <= c.bounds[0][1]]
    far = [c.depth for c in leaves if c.bounds[0][0] < 0.4]   # leaves holding some p < 0.4
    assert max(near) > max(far)
    assert all(c.bounds[0][0] >= 0.5 for c in leaves if c.depth == max(near))
    # most plays went to leaves in the right half of [0, 1]
    by_id = {c.id: c for c in leaves}
    right = sum(n for i, n in plays.items() if i in by_id and by_id[i].bounds[0][0] >= 0.5)
    left = sum(n for i, n in plays.items() if i in by_id and by_id[i].bounds[0][1] <= 0.5)
    assert right > left
    split = next(c.parent for c in leaves if c.depth > 0)
    with pytest.raises(ValueError, match="leaf"):
        s.update(split, 0.5)                              # a split cell is no longer a leaf
    with pytest.raises(ValueError, match="leaf"):
        s.update(10_000, 0.5)


def test_sucb_split_inherits_statistics_and_picks_the_widest_dim():
    s = SUCB([Dim(0.0, 1.0), Dim(values=(1, 2, 3, 4))], np.random.default_rng(0), init_bins=[1, 1],
             n_split=1, discount=1.0)
    (root,) = s.leaves()
    s.update(root.id, 0.5)                                # N = 1 >= 1 * 2^0: split
    kids = s.leaves()
    assert [c.depth for c in kids] == [1, 1] and {c.parent for c in kids} == {root.id}
    assert all(c.N == 1.0 and c.S == 0.5 for c in kids)   # inherited copies (double-counted)
    assert kids[0].bounds[0] == (0.0, 0.5) and kids[0].bounds[1] == (0, 4)   # widths 1 vs 1: first
    s.update(kids[0].id, 1.0)                             # N = 2 >= 2: split along values now
    b = sorted(c.bounds[1] for c in s.leaves() if c.depth == 2)
    assert b == [(0, 2), (2, 4)]


# -- determinism and state ---------------------------------------------------------------------------

def drive(b, steps, env_seed, masks=False):
    env = np.random.default_rng(env_seed)
    out = []
    for _ in range(steps):
        mask = None
        if masks:
            mask = env.random(b.n_arms) < 0.7
            mask[0] = True
        a = b.select(mask)
        b.update(a, float(env.random()))
        out.append(a)
    return out


@pytest.mark.parametrize("name", BANDITS)
def test_same_seed_same_arms_and_state_round_trip(name):
    a1 = drive(make_bandit(name, 4, np.random.default_rng(7)), 150, 1, masks=True)
    a2 = drive(make_bandit(name, 4, np.random.default_rng(7)), 150, 1, masks=True)
    assert a1 == a2

    orig = make_bandit(name, 4, np.random.default_rng(7), **({"window": 20} if name == "swucb" else {}))
    drive(orig, 100, 2)
    st = json.loads(json.dumps(orig.state()))
    assert st["t"] == 100 and "rng" in st
    copy = make_bandit(name, 4, np.random.default_rng(999), **st["params"])
    copy.set_state(st)
    np.testing.assert_array_equal(copy.indices(), orig.indices())
    assert drive(copy, 100, 3, masks=True) == drive(orig, 100, 3, masks=True)
    with pytest.raises(ValueError, match="state"):
        make_bandit(name, 5, np.random.default_rng(0)).set_state(st)


def test_sucb_same_seed_and_state_round_trip():
    dims = [Dim(0.0, 1.0), Dim(values=(4, 8, 16, 32))]

    def go(s, steps, seed):
        env = np.random.default_rng(seed)
        out = []
        for _ in range(steps):
            p, cid = s.select([0.2, None])
            s.update(cid, float(np.clip(p[0] + env.normal(0, 0.1), 0, 1)))
            out.append((p, cid))
        return out

    assert go(SUCB(dims, np.random.default_rng(5), play="uniform"), 200, 1) == \
        go(SUCB(dims, np.random.default_rng(5), play="uniform"), 200, 1)
    orig = SUCB(dims, np.random.default_rng(5), play="uniform")
    go(orig, 150, 1)
    copy = SUCB(dims, np.random.default_rng(0), play="uniform")
    copy.set_state(json.loads(json.dumps(orig.state())))
    assert copy.leaves() == orig.leaves()
    assert go(copy, 150, 2) == go(orig, 150, 2)
    with pytest.raises(ValueError, match="state"):
        SUCB(dims, np.random.default_rng(0), discount=0.9).set_state(orig.state())


# -- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "params", "param"), [
    ("ucb1", {"exploration": -1.0}, "exploration"),
    ("ucb1", {"exploration": float("nan")}, "exploration"),
    ("ducb", {"discount": 0.0}, "discount"),
    ("ducb", {"discount": 1.5}, "discount"),
    ("ducb", {"xi": 0.0}, "xi"),
    ("ducb", {"bound": -1.0}, "bound"),
    ("swucb", {"window": 0}, "window"),
    ("swucb", {"window": 2.5}, "window"),
    ("swucb", {"xi": -0.1}, "xi"),
    ("exp3", {"gamma": 0.0}, "gamma"),
    ("exp3", {"gamma": 1.1}, "gamma"),
    ("thompson", {"sigma": 0.0}, "sigma"),
    ("egreedy", {"epsilon": 1.5}, "epsilon"),
    ("egreedy", {"decay": "log"}, "decay"),
    ("ucb1", {"c": 1.0}, "c"),
])
def test_bad_params_raise(name, params, param):
    with pytest.raises(ValueError, match=param):
        make_bandit(name, 3, np.random.default_rng(0), **params)


def test_bad_names_arms_rewards_and_sucb_params():
    with pytest.raises(ValueError, match="ucb1, ducb, swucb, exp3, thompson, egreedy"):
        make_bandit("ucb2", 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_arms"):
        make_bandit("ucb1", 0, np.random.default_rng(0))
    for name in BANDITS:
        b = make_bandit(name, 3, np.random.default_rng(0))
        with pytest.raises(ValueError, match="reward"):
            b.update(0, float("nan"))
        with pytest.raises(ValueError, match="arm"):
            b.update(3, 0.5)
    dims = [Dim(0.0, 1.0), Dim(values=(4, 8))]
    rng = np.random.default_rng(0)
    for kwargs, param in [({"discount": 0.0}, "discount"), ({"delta": 0.0}, "delta"),
                          ({"n_split": 0}, "n_split"), ({"play": "corner"}, "play"),
                          ({"max_depth": -1}, "max_depth"), ({"exploration": -1.0}, "exploration"),
                          ({"init_bins": [2, 3]}, "init_bins"), ({"init_bins": [0, 1]}, "init_bins"),
                          ({"init_bins": [2]}, "init_bins")]:
        with pytest.raises(ValueError, match=param):
            SUCB(dims, rng, **kwargs)
    with pytest.raises(ValueError, match="lo < hi"):
        Dim(1.0, 0.0)
    with pytest.raises(ValueError, match="increasing"):
        Dim(values=(8, 4))
    with pytest.raises(ValueError, match="reward"):
        SUCB(dims, rng).update(0, float("inf"))

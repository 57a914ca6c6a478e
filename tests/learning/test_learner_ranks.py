"""Per-layer LoRA ranks, HetLoRA rank self-pruning and the resize choice in the real learner (tiny-bert).

The learner is built once per module (``make_learner``); ``local_update`` commits nothing, so the same
(device, round) can be trained repeatedly under different plans and compared.
"""

from __future__ import annotations

import math

import pytest
import torch
from fleet_helpers import base_scenario

from devices.plan import Plan
from learning import aggregate as agg
from learning.learner import GlobalEntry, RealLearner, self_prune_rank
from learning.lora import attach, detach, lora_keys, lora_scale
from sim.loader import validate
from sim.runner import make_learner

ALPHA = 16.0  # LearningSpec.lora_alpha default


def _learner(**learning) -> RealLearner:
    """The learner of test_learner.learning_scenario (not importable under --import-mode=importlib)."""
    d = base_scenario()
    d["fleet"]["groups"] = [{"type": "tx2", "count": 3, "power_modes": ["MAXN"], "placement": "lan"}]
    d["workload"].update(seq_len=32, lora_targets=["query", "key", "value", "attn_out", "ffn_in", "ffn_out"])
    d["learning"] = {"kind": "real", "model": "tiny-bert", "train_examples": 300, "test_size": 60,
                     "partition": {"kind": "dirichlet", "alpha": 1.0, "min_size": 8}, **learning}
    return make_learner(validate(d))


@pytest.fixture(scope="module")
def lr() -> RealLearner:
    return _learner()


def _plan(rank=8, layers=(5, 6, 10, 11), layer_ranks=(2, 4, 8, 3), p=0.0, steps=2, **kw) -> Plan:
    return Plan(prune_ratio=p, lora_rank=rank, lora_layers=layers, local_steps=steps, batch_size=8,
                layer_ranks=layer_ranks, **kw)


def test_proxy_ranks_take_the_largest_mapped_rank(lr):
    # target RoBERTa-base has 12 layers, tiny-bert 2: target 0..5 -> proxy 0, 6..11 -> proxy 1
    assert (lr.target_layers, lr.adapter.num_layers) == (12, 2)
    assert lr.proxy_ranks(_plan()) == {0: 2, 1: 8}
    assert lr.proxy_ranks(_plan(rank=5, layers=(10, 11), layer_ranks=(5, 3))) == {1: 5}
    assert lr.proxy_ranks(_plan(rank=4, layers=None, layer_ranks=None)) == {0: 4, 1: 4}
    assert lr.proxy_layers(_plan()) == [0, 1]
    keys = lora_keys(lr.adapter, lr.targets, [0, 1])
    assert lr.key_ranks(_plan(), keys) == {k: (2 if k[0] == 0 else 8) for k in keys}


def test_attach_gives_peft_modules_their_own_rank_and_scaling(lr):
    keys = lora_keys(lr.adapter, lr.targets, [0, 1])
    ranks = lr.key_ranks(_plan(), keys)
    ranks[(1, "attention.self.key")] = 5  # one odd matrix inside a layer, too
    gen = torch.Generator().manual_seed(0)
    fac = {k: (0.01 * torch.randn(lr.shapes[k][0], ranks[k], generator=gen),
               agg.lora_a_init(ranks[k], lr.shapes[k][1], gen)) for k in keys}
    masks = lr.adapter.full_mask()
    att = attach(lr.model, lr.adapter, lr.slicer, masks, keys, ranks, ALPHA, fac)
    try:
        assert set(att.modules) == set(keys)
        for k, m in att.modules.items():
            r = ranks[k]
            assert m.r["default"] == r == att.rank(k)
            assert m.lora_A["default"].weight.shape == (r, lr.shapes[k][1])
            assert m.lora_B["default"].weight.shape == (lr.shapes[k][0], r)
            assert m.scaling["default"] == att.scale(k) == ALPHA / r
            # the module computes W x + (alpha / r_key) B A x
            x = torch.randn(3, lr.shapes[k][1], generator=gen)
            B, A = fac[k]
            with torch.no_grad():
                want = m.base_layer(x) + (ALPHA / r) * x @ A.T @ B.T
                torch.testing.assert_close(m(x), want)
        with pytest.raises(ValueError, match="single LoRA scaling"):
            _ = att.scaling
    finally:
        detach(lr.model, lr.slicer)
    assert not any(hasattr(m, "lora_A") for m in lr.model.modules())


def test_local_update_uploads_the_per_key_ranks(lr):
    pl = _plan(p=0.5)
    u = lr.local_update(0, pl, 0)
    ups = u.payload.factors
    assert set(ups) == set(lora_keys(lr.adapter, lr.targets, [0, 1]))
    for k, d in ups.items():
        r = 2 if k[0] == 0 else 8
        assert d.rank == r and d.scaling == ALPHA / r
    assert u.payload.rank == u.payload.state.rank == 8
    assert u.extra["lora_rank_reported"] == 8.0
    assert u.lora_update_norm > 0 and math.isfinite(u.loss_after)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_equal_layer_ranks_match_the_uniform_plan_exactly(lr, p):
    layers = (6, 9, 11)
    a = lr.local_update(1, _plan(rank=4, layers=layers, layer_ranks=None, p=p), 0)
    b = lr.local_update(1, _plan(rank=4, layers=layers, layer_ranks=(4, 4, 4), p=p), 0)
    assert (a.loss_before, a.loss_after, a.lora_update_norm) == (b.loss_before, b.loss_after, b.lora_update_norm)
    assert a.extra == b.extra
    assert set(a.payload.factors) == set(b.payload.factors)
    for k, ua in a.payload.factors.items():
        ub = b.payload.factors[k]
        assert torch.equal(ua.B, ub.B) and torch.equal(ua.A, ub.A) and ua.scaling == ub.scaling
        assert torch.equal(ua.rows, ub.rows) and torch.equal(ua.cols, ub.cols)


def test_self_prune_rank_rule():
    assert [self_prune_rank(r, 0.5) for r in (1, 2, 3, 8, 9)] == [1, 1, 1, 4, 4]
    assert self_prune_rank(100, 0.29) == 29  # not 28 from 0.29 * 100 = 28.999...
    assert self_prune_rank(4, 1.0) == 4


def test_self_prune_tail_threshold():
    """tail = ||s B[:, k:] A[k:]|| / ||s B A|| over all keys, compared with the tolerance."""
    B1, A1 = torch.tensor([[3.0, 0.0, 4.0, 0.0]]), torch.eye(4)  # r 4, k 2: tail ||(0,0,4,0)|| of ||(3,0,4,0)||
    B2, A2 = torch.tensor([[0.0, 0.0]]), torch.eye(2)  # zero update: adds nothing to either sum
    final = {(0, "a"): (B1, A1), (1, "b"): (B2, A2)}
    scales = {(0, "a"): 2.0, (1, "b"): 8.0}
    tail = 4 / 5

    def plan(tol, gamma=0.5):
        return _plan(rank=4, layers=(0, 11), layer_ranks=(4, 2), rank_prune_decay=gamma, rank_prune_tol=tol)

    assert RealLearner._self_prune(final, scales, plan(tail - 1e-6)) is final
    out = RealLearner._self_prune(final, scales, plan(tail + 1e-6))
    assert torch.equal(out[(0, "a")][0], B1[:, :2]) and torch.equal(out[(0, "a")][1], A1[:2])
    assert out[(1, "b")][0].shape == (1, 1) and out[(1, "b")][1].shape == (1, 2)
    assert RealLearner._self_prune(final, scales, plan(0.999, gamma=1.0)) is final  # off
    zero = {(1, "b"): (B2, A2)}
    assert RealLearner._self_prune(zero, {(1, "b"): 8.0}, plan(1e-3))[(1, "b")][0].shape == (1, 1)  # tail := 0
    assert RealLearner._self_prune(zero, {(1, "b"): 8.0}, plan(0.0)) is zero  # tol 0 never prunes


def test_self_pruning_uploads_the_truncated_factors(lr):
    full = lr.local_update(2, _plan(), 1)
    kept = lr.local_update(2, _plan(rank_prune_decay=0.5, rank_prune_tol=0.0), 1)  # tol 0: never prunes
    cut = lr.local_update(2, _plan(rank_prune_decay=0.5, rank_prune_tol=0.999), 1)  # prunes
    assert full.extra["lora_rank_reported"] == kept.extra["lora_rank_reported"] == 8.0
    assert cut.extra["lora_rank_reported"] == 4.0 and cut.payload.rank == cut.payload.state.rank == 4
    assert cut.lora_update_norm == full.lora_update_norm  # measured on the trained factors
    for k, f in full.payload.factors.items():
        g, c = kept.payload.factors[k], cut.payload.factors[k]
        assert torch.equal(g.B, f.B) and torch.equal(g.A, f.A) and g.scaling == f.scaling
        r = f.rank
        kk = r // 2 if r > 1 else 1
        assert (r, c.rank) == ((2, 1) if k[0] == 0 else (8, 4))
        assert torch.equal(c.B, f.B[:, :kk]) and torch.equal(c.A, f.A[:kk])
        assert c.scaling == f.scaling == ALPHA / r  # the trained rank's scaling
        shape = lr.shapes[k]
        want = torch.zeros(shape)
        want[f.rows[:, None], f.cols[None, :]] = (ALPHA / r) * f.B[:, :kk] @ f.A[:kk]
        torch.testing.assert_close(agg.delta_full(c, shape), want)


def test_self_pruned_rank_sets_the_global_truncation_rank(lr):
    u = lr.local_update(0, _plan(rank=4, layers=None, layer_ranks=None, rank_prune_decay=0.5,
                                 rank_prune_tol=0.999), 0)
    assert u.extra["lora_rank_reported"] == 2.0
    fresh = _learner()
    fresh.aggregate([0], [u], "zero_pad", [1.0])
    assert fresh.devices[0].rank == 2 and fresh._max_rank() == 2
    assert all(g.B.shape[1] == 2 for g in fresh.glob.values())


def test_resize_auto_defaults_to_svd_and_follows_use_resize():
    lr = _learner()
    assert lr.config.resize == "auto"
    assert lr.resize_method == "svd" and lr.info()["resize"] == "svd"
    key = (1, "attention.self.query")
    gen = torch.Generator().manual_seed(3)
    d_out, d_in = lr.shapes[key]
    Bg, Ag = torch.randn(d_out, 6, generator=gen), torch.randn(6, d_in, generator=gen)
    lr.glob = {key: GlobalEntry(B=Bg, A=Ag)}
    masks = lr.adapter.full_mask()
    rows, cols = lr._rows_cols(key, masks)
    s = ALPHA / 3

    def received():
        return lr._received([key], masks, {key: 3}, torch.Generator().manual_seed(5))[key]

    B, A = received()
    Bs, As = agg.factor_svd((Bg @ Ag)[rows][:, cols], 3, s, torch.Generator().manual_seed(5))
    assert torch.equal(B, Bs) and torch.equal(A, As)
    lr.use_resize("truncate")
    assert lr.resize_method == "truncate" and lr.info()["resize"] == "truncate"
    B, A = received()
    Bt, At = agg.factor_truncate(Bg, Ag, rows, cols, 3, s, torch.Generator().manual_seed(5))
    assert torch.equal(B, Bt) and torch.equal(A, At)
    torch.testing.assert_close(s * B @ A, (Bg[:, :3] @ Ag[:3])[rows][:, cols])
    with pytest.raises(ValueError, match="resize method"):
        lr.use_resize("zero_pad")
    assert lr.resize_method == "truncate"


def test_explicit_resize_wins_over_use_resize():
    lr = _learner(resize="svd")
    lr.use_resize("truncate")
    assert lr.resize_method == "svd" and lr.info()["resize"] == "svd"


def test_local_update_does_not_depend_on_the_slice_cache(lr):
    """Slicing builds nn.Linear copies (global-RNG init) under a forked RNG: a cold and a warm slice
    cache give the same update, so results never depend on the order devices train in."""
    pl = _plan(p=0.5)
    lr.slicer._cache.clear()
    cold = lr.local_update(2, pl, 0)
    warm = lr.local_update(2, pl, 0)
    assert (cold.loss_before, cold.loss_after, cold.lora_update_norm) == (warm.loss_before, warm.loss_after,
                                                                          warm.lora_update_norm)


def test_lora_scale_rules():
    assert lora_scale(16.0, 8) == 2.0 and lora_scale(16.0, 32) == 0.5
    assert lora_scale(16.0, 16, "rslora") == 4.0 and lora_scale(16.0, 4, "rslora") == 8.0
    # alpha = a sqrt(r0) under rslora gives standard's scaling a at r0 exactly (here r0 = 8, a = 2)
    assert lora_scale(2 * math.sqrt(8), 8, "rslora") == lora_scale(16.0, 8) == 2.0
    with pytest.raises(ValueError, match="allowed: standard, rslora"):
        lora_scale(16.0, 8, "sqrt")
    with pytest.raises(ValueError, match=">= 1"):
        lora_scale(16.0, 0)


@pytest.mark.parametrize("scaling,dropout", [("standard", 0.0), ("rslora", 0.1)])
def test_attach_builds_what_peft_injection_builds(lr, scaling, dropout):
    """attach wraps each chosen layer itself: the same peft class, rank, scaling, dropout, trainable
    adapter and frozen base, and forward as peft.inject_adapter_in_model with a rank_pattern gives
    (guards the pinned peft's constructor)."""
    import re

    from peft import LoraConfig, inject_adapter_in_model

    keys = lora_keys(lr.adapter, lr.targets, [0, 1])
    ranks = lr.key_ranks(_plan(), keys)
    gen = torch.Generator().manual_seed(2)
    fac = {k: (0.01 * torch.randn(lr.shapes[k][0], ranks[k], generator=gen),
               agg.lora_a_init(ranks[k], lr.shapes[k][1], gen)) for k in keys}
    x = {k: torch.randn(3, lr.shapes[k][1], generator=gen) for k in keys}
    masks = lr.adapter.full_mask()
    mode = lr.model.training

    def wrapped() -> dict:
        blocks = lr.adapter.blocks(lr.model)
        out = {}
        for li, path in keys:
            m = blocks[li]
            for part in path.split("."):
                m = getattr(m, part)
            m.eval()  # dropout off for the forward; its p is compared
            grads = (m.lora_A["default"].weight.requires_grad, m.lora_B["default"].weight.requires_grad,
                     m.base_layer.weight.requires_grad)
            with torch.no_grad():
                out[(li, path)] = (type(m), m.r["default"], m.scaling["default"],
                                   getattr(m.lora_dropout["default"], "p", 0.0), grads, m(x[(li, path)]))
        return out

    attach(lr.model, lr.adapter, lr.slicer, masks, keys, ranks, ALPHA, fac, dropout, scaling=scaling)
    try:
        ours = wrapped()
    finally:
        detach(lr.model, lr.slicer)
    prefix = re.escape(lr.adapter.block_prefix(lr.model))
    top = max(ranks.values())
    alts = "|".join(rf"{li}\.{re.escape(p)}" for li, p in keys)
    cfg = LoraConfig(r=top, lora_alpha=ALPHA, target_modules=rf"^{prefix}\.({alts})$", lora_dropout=dropout,
                     use_rslora=scaling == "rslora",
                     rank_pattern={rf"^{prefix}\.{li}\.{re.escape(p)}": r for (li, p), r in ranks.items() if r != top})
    lr.slicer.apply(masks)
    try:
        with torch.random.fork_rng(devices=[]):
            inject_adapter_in_model(cfg, lr.model)
        blocks = lr.adapter.blocks(lr.model)
        with torch.no_grad():
            for li, path in keys:
                m = blocks[li]
                for part in path.split("."):
                    m = getattr(m, part)
                m.lora_B["default"].weight.copy_(fac[(li, path)][0])
                m.lora_A["default"].weight.copy_(fac[(li, path)][1])
        theirs = wrapped()
    finally:
        detach(lr.model, lr.slicer)
        if hasattr(lr.model, "peft_config"):
            del lr.model.peft_config
        lr.model.train(mode)
    for k in keys:
        assert ours[k][:5] == theirs[k][:5], k
        assert ours[k][4] == (True, True, False) and ours[k][3] == dropout, k
        assert torch.equal(ours[k][5], theirs[k][5]), k


def test_rslora_attach_matches_peft_and_the_learner_scales():
    lr2 = _learner(lora_scaling="rslora")
    keys = lora_keys(lr2.adapter, lr2.targets, [0, 1])
    ranks = lr2.key_ranks(_plan(), keys)
    gen = torch.Generator().manual_seed(1)
    fac = {k: (0.01 * torch.randn(lr2.shapes[k][0], ranks[k], generator=gen),
               agg.lora_a_init(ranks[k], lr2.shapes[k][1], gen)) for k in keys}
    att = attach(lr2.model, lr2.adapter, lr2.slicer, lr2.adapter.full_mask(), keys, ranks, ALPHA, fac,
                 scaling="rslora")
    try:
        for k, m in att.modules.items():
            assert m.scaling["default"] == pytest.approx(att.scale(k)) == pytest.approx(ALPHA / math.sqrt(ranks[k]))
    finally:
        detach(lr2.model, lr2.slicer)
    ups = lr2.local_update(0, _plan(p=0.5), 0).payload.factors
    for k, d in ups.items():
        assert d.scaling == pytest.approx(ALPHA / math.sqrt(2 if k[0] == 0 else 8))


def test_rslora_with_alpha_times_sqrt_rank_equals_standard_at_that_rank(lr):
    """At a uniform rank 8, (rslora, alpha 2 sqrt 8) and (standard, alpha 16) both scale by 2: same update."""
    pl = _plan(rank=8, layers=None, layer_ranks=None, p=0.3)
    a = lr.local_update(1, pl, 0)
    b = _learner(lora_scaling="rslora", lora_alpha=2 * math.sqrt(8)).local_update(1, pl, 0)
    assert a.loss_after == b.loss_after and a.lora_update_norm == b.lora_update_norm
    for k, d in a.payload.factors.items():
        e = b.payload.factors[k]
        assert d.scaling == e.scaling == 2.0
        assert torch.equal(d.B, e.B) and torch.equal(d.A, e.A)
    c = _learner(lora_scaling="rslora").local_update(1, pl, 0)  # alpha 16: s = 16 / sqrt 8, a larger step
    assert c.lora_update_norm > a.lora_update_norm

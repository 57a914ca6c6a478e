"""Group importance (LoRA-guided estimate, EMA, normalisation) and the monotone pruning step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from learning.aggregate import factor_svd
from learning.data import collate, load_dataset, tokenize
from learning.importance import ImportanceEMA, combine, group_sums, lora_grad_importance, prune
from learning.lora import attach, detach, lora_keys
from learning.models import load_proxy
from learning.structure import ArchAdapter, MatrixSpec, Slicer, zero_pruned


def _rank(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)


def spearman(a, b) -> float:
    return float(np.corrcoef(_rank(np.asarray(a)), _rank(np.asarray(b)))[0, 1])


def head_importance_vs_removal(seed: int, steps: int = 20, rank: int = 8) -> float:
    """Spearman between LoRA-guided head scores and the measured loss increase of removing each head."""
    pm = load_proxy("tiny-bert", 2, seed=seed)
    model, tok = pm.model, pm.tokenizer
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    ad = ArchAdapter.for_model(model)
    ds = load_dataset("rotten_tomatoes")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.texts), 256, replace=False)
    ids = tokenize([ds.texts[i] for i in idx], tok, 32)
    y = torch.from_numpy(np.asarray(ds.labels)[idx]).long()

    def batch(rows):
        x, a = collate([ids[i] for i in rows], tok.pad_token_id)
        return {"input_ids": x, "attention_mask": a}, y[rows]

    gen = torch.Generator().manual_seed(seed)
    sl = Slicer(model, ad)
    masks = ad.full_mask()
    keys = lora_keys(ad, ["query", "key", "value", "attn_out"], range(ad.num_layers))
    fac = {k: factor_svd(torch.zeros(sl.original(*k).weight.shape), rank, 16 / rank, gen) for k in keys}
    att = attach(model, ad, sl, masks, keys, rank, 16.0, fac)
    specs = {s.path: s for s in ad.matrices}
    ema = ImportanceEMA(0.9)
    opt = torch.optim.AdamW(list(att.parameters()), lr=1e-3)
    for _ in range(steps):
        b, t = batch(rng.choice(256, 32, replace=False))
        nn.functional.cross_entropy(model(**b).logits, t).backward()
        with torch.no_grad():
            for k, mod in att.modules.items():
                A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                e = lora_grad_importance(mod.base_layer.weight, B, A, B.grad, A.grad, att.scaling)
                ema.update(k, masks.attn[k[0]], group_sums(e, specs[k[1]]))
        opt.step()
        opt.zero_grad()
    factors = att.factors()
    detach(model, sl)
    merged = copy.deepcopy(model)  # W + s·B·A, plain layers
    with torch.no_grad():
        for (li, path), (B, A) in factors.items():
            lin = ad.blocks(merged)[li]
            for part in path.split("."):
                lin = getattr(lin, part)
            lin.weight += att.scaling * B @ A
    b, t = batch(np.arange(256))
    with torch.no_grad():
        base = float(nn.functional.cross_entropy(merged(**b).logits, t))
    scores, increase = [], []
    for li in range(ad.num_layers):
        sc = combine([ema.values[(li, s.path)] for s in ad.matrices if s.kind == "attn"], masks.attn[li])
        for h in range(ad.attn_groups):
            m2 = copy.deepcopy(merged)
            mk = ad.full_mask()
            mk.attn[li, h] = False
            zero_pruned(m2, ad, mk)
            with torch.no_grad():
                increase.append(float(nn.functional.cross_entropy(m2(**b).logits, t)) - base)
            scores.append(sc[h])
    return spearman(scores, increase)


def test_lora_guided_importance_ranks_heads_like_their_removal():
    rho = [head_importance_vs_removal(s) for s in range(3)]
    assert np.mean(rho) >= 0.5, rho


def test_group_sums_rows_and_columns():
    e = torch.arange(24.0).reshape(4, 6)
    rows = MatrixSpec("x", "query", "attn", 0, 2)  # 2 groups of 2 rows
    cols = MatrixSpec("y", "attn_out", "attn", 1, 3)  # 2 groups of 3 columns
    np.testing.assert_allclose(group_sums(e, rows), [e[:2].sum(), e[2:].sum()])
    np.testing.assert_allclose(group_sums(e, cols), [e[:, :3].sum(), e[:, 3:].sum()])


def test_lora_guided_formula():
    g = torch.Generator().manual_seed(0)
    W, B, A = torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g), torch.randn(2, 4, generator=g)
    gB, gA = torch.randn(5, 2, generator=g), torch.randn(2, 4, generator=g)
    want = ((gB @ A + B @ gA - gB @ gA) * (W + 0.5 * B @ A)).abs()
    torch.testing.assert_close(lora_grad_importance(W, B, A, gB, gA, 0.5), want)


def test_ema_of_group_sums_equals_group_sums_of_elementwise_ema():
    rng = np.random.default_rng(0)
    spec = MatrixSpec("x", "query", "attn", 0, 3)
    keep = np.array([True, False, True, True])
    ema = ImportanceEMA(0.8)
    elem_ema = None
    for _ in range(6):
        e = torch.from_numpy(rng.random((9, 5)))  # 3 kept groups x 3 rows
        ema.update((0, "x"), keep, group_sums(e, spec))
        elem_ema = e.clone() if elem_ema is None else 0.8 * elem_ema + 0.2 * e
    full = np.zeros(4)
    full[keep] = group_sums(elem_ema, spec)
    np.testing.assert_allclose(ema.values[(0, "x")], full)
    assert ema.count[(0, "x")] == 6


def test_combine_normalises_each_matrix():
    keep = np.array([True, True, False])
    a = np.array([1.0, 3.0, 100.0])  # the pruned entry must not count in the norm
    b = np.array([10.0, 0.0, 0.0])
    s = combine([a, b], keep)
    np.testing.assert_allclose(s[:2], [1 / np.sqrt(10) + 1.0, 3 / np.sqrt(10)], rtol=1e-6)
    assert s[2] == np.inf


@pytest.fixture(scope="module")
def tiny_adapter():
    return ArchAdapter.for_model(load_proxy("tiny-bert", 2, seed=0).model)


def scores_for(ad, rng):
    return {(li, k): rng.random(ad.n_groups(k)) for li in range(ad.num_layers) for k in ("attn", "ffn")}


def test_layer_prune_counts_and_lowest_first(tiny_adapter):
    ad = tiny_adapter
    sc = scores_for(ad, np.random.default_rng(0))
    m = prune(ad.full_mask(), sc, 0.5, ad)
    for li in range(ad.num_layers):
        assert (~m.attn[li]).sum() == 2 and (~m.ffn[li]).sum() == 64
        removed = sc[(li, "ffn")][~m.ffn[li]]
        assert removed.max() <= sc[(li, "ffn")][m.ffn[li]].min()


def test_prune_is_monotone(tiny_adapter):
    ad = tiny_adapter
    rng = np.random.default_rng(1)
    m1 = prune(ad.full_mask(), scores_for(ad, rng), 0.25, ad)
    sc2 = scores_for(ad, rng)
    for li in range(ad.num_layers):  # make the pruned groups look best now: still never restored
        sc2[(li, "ffn")][~m1.ffn[li]] = 99.0
        sc2[(li, "ffn")] = combine([sc2[(li, "ffn")]], m1.ffn[li])
        sc2[(li, "attn")] = combine([sc2[(li, "attn")]], m1.attn[li])
    m2 = prune(m1, sc2, 0.5, ad)
    assert not (m2.ffn & ~m1.ffn).any() and not (m2.attn & ~m1.attn).any()
    assert (~m2.ffn).sum() == 2 * 64
    assert prune(m2, sc2, 0.25, ad).key() == m2.key()  # a lower ratio removes nothing and restores nothing


def test_protected_layers_and_keep_one(tiny_adapter):
    ad = tiny_adapter
    m = prune(ad.full_mask(), scores_for(ad, np.random.default_rng(2)), 0.95, ad, protected=frozenset({0}))
    assert m.attn[0].all() and m.ffn[0].all()
    assert m.attn[1].sum() == 1 and m.ffn[1].sum() == 7  # floor(0.95 * 128) = 121 removed


def test_global_scope_total_and_min_one_per_layer(tiny_adapter):
    ad = tiny_adapter
    sc = scores_for(ad, np.random.default_rng(3))
    sc[(0, "attn")] = np.array([0.0, 0.01, 0.02, 0.03])  # layer 0 heads all look useless
    sc[(1, "attn")] = np.array([0.5, 0.6, 0.7, 0.8])
    m = prune(ad.full_mask(), sc, 0.5, ad, scope="global")
    assert (~m.attn).sum() == 4  # floor(0.5 * 4) per layer x 2 layers, placed globally
    assert m.attn[0].sum() == 1 and m.attn[1].sum() == 3  # layer 0 keeps one, the fourth comes from layer 1
    assert (~m.ffn).sum() == 128
